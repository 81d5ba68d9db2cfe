//! A parallel, projecting CSV decoder for the exports the business hands us (RFC 4180).
//!
//! Why our own: a general CSV reader decodes every column and stops at the first bad row. The
//! plays export is 12 GB a day of which a pipeline needs a third, and real exports carry bad rows
//! that must be kept, not fatal. This decoder
//!
//! * splits the file into blocks at record boundaries (quote-aware, so quoted newlines are safe)
//!   on one reader thread, and parses blocks on `threads` workers;
//! * decodes only the projected columns, but checks every record's field count;
//! * turns each bad record into a [`Reject`] naming file, physical line, column and reason, and
//!   keeps going;
//! * yields batches in file order, so rejects and outputs are the same bytes on every rerun;
//! * holds at most `2 x threads + 2` blocks in memory, whatever the file size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::rejects::Reject;
use crate::schema::Rule;

/// Tuning of the decoder; the defaults suit files from megabytes to tens of gigabytes.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Bytes per block (a block becomes one record batch).
    pub block_size: usize,
    /// Parser threads.
    pub threads: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            block_size: 4 << 20,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// One decoded block: the good rows as a batch, and the bad ones.
#[derive(Debug)]
pub struct CsvBlock {
    pub batch: RecordBatch,
    /// Records seen in the block, good and bad (blank lines excluded).
    pub records: u64,
    pub rejects: Vec<Reject>,
    /// Bytes of the file this block covered.
    pub bytes: u64,
}

/// An open CSV file whose header has been checked against the expected schema.
pub struct CsvDecoder {
    path: PathBuf,
    file: Box<dyn Read + Send>,
    plan: Arc<ParsePlan>,
    options: CsvOptions,
}

/// What a worker needs to parse a block: column positions and types.
#[derive(Debug)]
struct ParsePlan {
    file: String,
    /// Number of fields every record must have.
    width: usize,
    /// For each field position in the file: the output column it feeds, if projected.
    field_to_output: Vec<Option<usize>>,
    output: SchemaRef,
    /// The contract's value rule of each output column.
    rules: Vec<Option<Rule>>,
}

impl CsvDecoder {
    /// Opens `path`, reads its header and maps the `projection` of `file_schema` onto it by
    /// column name. The header must hold every column of `file_schema` (extra columns are
    /// tolerated and counted, never decoded).
    pub fn open(
        path: &Path,
        file_schema: &SchemaRef,
        projection: &[&str],
        options: CsvOptions,
    ) -> Result<Self> {
        let display = path.display().to_string();
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::InputMissing(display.clone()),
            _ => Error::io(path, e),
        })?;
        Self::from_reader(display, Box::new(file), file_schema, projection, options)
    }

    /// [`CsvDecoder::open`] for a stream of the file's bytes (an object in a store), named
    /// `name` in rejects and errors. It reads the header: call it off the async runtime.
    pub fn from_reader(
        name: String,
        reader: Box<dyn Read + Send>,
        file_schema: &SchemaRef,
        projection: &[&str],
        options: CsvOptions,
    ) -> Result<Self> {
        let path = PathBuf::from(&name);
        let path = path.as_path();
        let display = name;
        let mut file = decompressed(reader, path)?;
        // The header is short; read a bounded prefix to find it.
        let mut prefix = vec![0u8; 64 << 10];
        let mut filled = 0;
        let header_end = loop {
            let n = file
                .read(&mut prefix[filled..])
                .map_err(|e| Error::io(path, e))?;
            filled += n;
            if let Some(i) = memchr::memchr(b'\n', &prefix[..filled]) {
                break i;
            }
            if n == 0 || filled == prefix.len() {
                return Err(Error::Input {
                    file: display,
                    line: 1,
                    column: "*".into(),
                    reason: "no header line (expected the column names, comma separated)".into(),
                });
            }
        };
        let header_line = std::str::from_utf8(&prefix[..header_end])
            .map_err(|_| input_err(&display, 1, "*", "header is not UTF-8"))?
            .trim_end_matches('\r')
            .trim_start_matches('\u{feff}');
        let header: Vec<&str> = header_line
            .split(',')
            .map(|h| h.trim().trim_matches('"'))
            .collect();

        let output = Arc::new(
            file_schema.project(
                &projection
                    .iter()
                    .map(|name| {
                        file_schema
                            .index_of(name)
                            .map_err(|_| Error::Internal(format!("{name} is not in the schema")))
                    })
                    .collect::<Result<Vec<_>>>()?,
            )?,
        );
        for field in file_schema.fields() {
            if !header.contains(&field.name().as_str()) {
                return Err(input_err(
                    &display,
                    1,
                    field.name(),
                    &format!(
                        "header lacks column {:?} (header: {header_line:?})",
                        field.name()
                    ),
                ));
            }
        }
        let field_to_output = header
            .iter()
            .map(|h| projection.iter().position(|p| p == h))
            .collect::<Vec<_>>();
        for field in output.fields() {
            if !is_supported(field.data_type()) {
                return Err(Error::Internal(format!(
                    "CSV decoding of {} is not supported",
                    field.data_type()
                )));
            }
        }
        // What was read past the header is the start of the data: a decompressing reader
        // cannot seek back.
        let rest = prefix[header_end + 1..filled].to_vec();
        let file: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(rest).chain(file));
        Ok(CsvDecoder {
            path: path.to_path_buf(),
            file,
            plan: Arc::new(ParsePlan {
                file: display,
                width: header.len(),
                field_to_output,
                rules: output.fields().iter().map(|f| Rule::of(f.name())).collect(),
                output,
            }),
            options,
        })
    }

    /// The schema of the decoded batches (the projection, in projection order).
    pub fn schema(&self) -> SchemaRef {
        self.plan.output.clone()
    }

    /// Starts the reader and the workers; the iterator yields blocks in file order.
    pub fn blocks(self) -> CsvBlocks {
        let threads = self.options.threads.max(1);
        let (work_tx, work_rx) = sync_channel::<Work>(threads + 1);
        let (done_tx, done_rx) = sync_channel::<(u64, Result<CsvBlock>)>(threads + 1);
        let mut handles = Vec::new();
        let reader_done = done_tx.clone();
        let (file, path, block_size) = (self.file, self.path, self.options.block_size);
        // The reader may run at most `window` blocks ahead of the consumer, wherever they wait
        // (queued, being parsed, parsed and waiting for an earlier one): a slow block cannot make
        // the others pile up.
        let window = Window::new(window_blocks(threads));
        let reader_window = window.clone();
        handles.push(
            std::thread::Builder::new()
                .name("csv-reader".into())
                .spawn(move || {
                    if let Err((seq, e)) = split_blocks(file, block_size, &work_tx, &reader_window)
                    {
                        // Sent with the sequence number of the block that failed: the consumer sees every
                        // earlier block first, then the error.
                        let _ = reader_done.send((seq, Err(Error::io(&path, e))));
                    }
                }),
        );
        let work_rx = Arc::new(Mutex::new(work_rx));
        for i in 0..threads {
            let (rx, tx, plan) = (work_rx.clone(), done_tx.clone(), self.plan.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("csv-parse-{i}"))
                    .spawn(move || {
                        loop {
                            let work = match rx.lock() {
                                Ok(guard) => guard.recv(),
                                Err(_) => return,
                            };
                            let Ok(work) = work else { return };
                            let seq = work.seq;
                            if tx.send((seq, parse_block(&plan, &work))).is_err() {
                                return;
                            }
                        }
                    }),
            );
        }
        drop(done_tx);
        let handles = handles.into_iter().filter_map(|h| h.ok()).collect();
        CsvBlocks {
            rx: done_rx,
            pending: BTreeMap::new(),
            next: 0,
            handles,
            finished: false,
            window,
        }
    }
}

/// The export's bytes, decompressed as they stream when the file is gzip or zstd (how a 12 GB
/// export is usually delivered), told by the file's magic bytes rather than its name. Another
/// compression is bad input (65), not a CSV full of garbage.
fn decompressed(mut file: Box<dyn Read + Send>, path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..]).map_err(|e| Error::io(path, e))? {
            0 => break,
            k => n += k,
        }
    }
    // What was read to tell the format goes back in front of the stream.
    let file: Box<dyn Read + Send> =
        Box::new(std::io::Cursor::new(magic[..n].to_vec()).chain(file));
    let other = |what: &str| {
        Err(input_err(
            &path.display().to_string(),
            1,
            "*",
            &format!("the file is {what}-compressed: exports are read as plain, gzip or zstd CSV"),
        ))
    };
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Box::new(Corrupt(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 20, file),
        )))),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Box::new(Corrupt(
            zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, e))?,
        ))),
        [b'B', b'Z', b'h', ..] => other("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => other("xz"),
        [b'P', b'K', 3, 4, ..] => other("zip"),
        _ => Ok(file),
    }
}

/// A decompressor whose complaints about its input (flate2 says `InvalidInput` for a corrupt
/// stream) read as bad data, which the exit code treats as the file's fault (65), not ours.
struct Corrupt<R>(R);

impl<R: Read> Read for Corrupt<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, e)
            }
            _ => e,
        })
    }
}

fn input_err(file: &str, line: u64, column: &str, reason: &str) -> Error {
    Error::Input {
        file: file.into(),
        line,
        column: column.into(),
        reason: reason.into(),
    }
}

fn is_supported(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int64
            | DataType::Int32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Utf8
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Millisecond, _)
    )
}

/// Blocks of the file in order; see [`CsvDecoder::blocks`].
pub struct CsvBlocks {
    rx: Receiver<(u64, Result<CsvBlock>)>,
    pending: BTreeMap<u64, Result<CsvBlock>>,
    next: u64,
    handles: Vec<JoinHandle<()>>,
    finished: bool,
    window: Window,
}

/// How many blocks past the consumer's the reader may cut: enough to keep every worker busy
/// with one block parsing and one queued.
fn window_blocks(threads: usize) -> u64 {
    2 * threads as u64 + 2
}

/// Blocks the reader has been allowed to cut: the consumer's position plus a fixed window.
#[derive(Clone)]
struct Window {
    state: Arc<(Mutex<(u64, bool)>, std::sync::Condvar)>,
    size: u64,
}

impl Window {
    fn new(size: u64) -> Self {
        Window {
            state: Arc::new((Mutex::new((0, false)), std::sync::Condvar::new())),
            size,
        }
    }

    /// Waits until block `seq` may be cut; false when the consumer is gone.
    fn admit(&self, seq: u64) -> bool {
        let (lock, cvar) = &*self.state;
        let Ok(mut state) = lock.lock() else {
            return false;
        };
        while !state.1 && seq >= state.0 + self.size {
            state = match cvar.wait(state) {
                Ok(s) => s,
                Err(_) => return false,
            };
        }
        !state.1
    }

    /// The consumer took block `seq`.
    fn consumed(&self, seq: u64) {
        let (lock, cvar) = &*self.state;
        if let Ok(mut state) = lock.lock() {
            state.0 = seq + 1;
            cvar.notify_all();
        }
    }

    fn close(&self) {
        let (lock, cvar) = &*self.state;
        if let Ok(mut state) = lock.lock() {
            state.1 = true;
            cvar.notify_all();
        }
    }
}

impl Drop for CsvBlocks {
    fn drop(&mut self) {
        // A consumer that stops early must not leave the reader waiting for room.
        self.window.close();
    }
}

impl Iterator for CsvBlocks {
    type Item = Result<CsvBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(block) = self.pending.remove(&self.next) {
                self.window.consumed(self.next);
                self.next += 1;
                return Some(block);
            }
            match self.rx.recv() {
                Ok((seq, block)) => {
                    if block.is_err() && seq == self.next {
                        self.finished = true;
                        return Some(block);
                    }
                    self.pending.insert(seq, block);
                }
                Err(_) => {
                    // All senders are gone. That is the end of the file only if no thread died
                    // and no block is missing: a panicked worker must not look like a short file.
                    self.finished = true;
                    let panicked = self.handles.drain(..).map(|h| h.join()).any(|r| r.is_err());
                    if panicked || !self.pending.is_empty() {
                        return Some(Err(Error::Internal(format!(
                            "a CSV decoding thread failed (block {} never arrived)",
                            self.next
                        ))));
                    }
                    return None;
                }
            }
        }
    }
}

struct Work {
    seq: u64,
    first_line: u64,
    data: Vec<u8>,
}

/// Reads `file` in blocks that end at a record boundary (a newline outside quotes) and hands them
/// to the workers with their first physical line number.
fn split_blocks(
    mut file: Box<dyn Read + Send>,
    block_size: usize,
    tx: &SyncSender<Work>,
    window: &Window,
) -> std::result::Result<(), (u64, std::io::Error)> {
    let mut carry: Vec<u8> = Vec::new();
    let mut seq = 0u64;
    let mut line = 2u64; // the header is line 1
    let mut eof = false;
    while !eof {
        let mut buf = std::mem::take(&mut carry);
        let start = buf.len();
        buf.resize(start + block_size, 0);
        let mut filled = start;
        while filled < buf.len() {
            let n = file.read(&mut buf[filled..]).map_err(|e| (seq, e))?;
            if n == 0 {
                eof = true;
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        if buf.is_empty() {
            break;
        }
        let RecordEnds {
            cut,
            newlines,
            newlines_at_cut,
        } = last_record_end(&buf);
        let (cut, lines) = match cut {
            _ if eof => (buf.len(), newlines + 1),
            Some(c) => (c, newlines_at_cut),
            // One record longer than a block: read on.
            None => {
                carry = buf;
                continue;
            }
        };
        carry = buf[cut..].to_vec();
        buf.truncate(cut);
        if !window.admit(seq) {
            return Ok(()); // the consumer is gone
        }
        if tx
            .send(Work {
                seq,
                first_line: line,
                data: buf,
            })
            .is_err()
        {
            return Ok(());
        }
        seq += 1;
        line += lines;
    }
    Ok(())
}

/// Where the last complete record of a block ends, and the newlines before it.
struct RecordEnds {
    /// One past the last newline that ends a record, if any does.
    cut: Option<usize>,
    /// Newlines in the whole block.
    newlines: u64,
    /// Newlines up to `cut`.
    newlines_at_cut: u64,
}

/// Finds record ends by the parser's own quote rule, so that the records of a file do not depend
/// on where its blocks are cut: a `"` opens a quoted field only at a field's start (after `,`, a
/// newline or the block's start, which is a record's start); inside one, `""` is a quote and a
/// lone `"` closes it; after the close, anything but `,` or a newline is garbage that the parser
/// skips to the end of the line. A `"` inside an unquoted field is data. (Toggling on every `"`
/// disagreed with `parse_block` on a stray quote: found by `make fuzz`.)
fn last_record_end(buf: &[u8]) -> RecordEnds {
    #[derive(PartialEq)]
    enum State {
        Unquoted,
        Quoted,
        /// After a closing quote's garbage: only a newline ends it.
        Garbage,
    }
    let mut state = State::Unquoted;
    let mut ends = RecordEnds {
        cut: None,
        newlines: 0,
        newlines_at_cut: 0,
    };
    let mut pos = 0;
    while let Some(off) = memchr::memchr2(b'"', b'\n', &buf[pos..]) {
        let i = pos + off;
        pos = i + 1;
        if buf[i] == b'\n' {
            ends.newlines += 1;
            if state != State::Quoted {
                state = State::Unquoted;
                ends.cut = Some(i + 1);
                ends.newlines_at_cut = ends.newlines;
            }
            continue;
        }
        match state {
            State::Unquoted if i == 0 || matches!(buf[i - 1], b',' | b'\n') => {
                state = State::Quoted
            }
            State::Unquoted | State::Garbage => {}
            State::Quoted => match buf.get(i + 1) {
                Some(b'"') => pos = i + 2,
                Some(b',' | b'\n') => state = State::Unquoted,
                Some(_) => state = State::Garbage,
                // The byte after the quote is in the next read: no record ends here anyway.
                None => break,
            },
        }
    }
    ends
}

/// A field of the current record: a byte range of the block, or an unescaped copy.
#[derive(Clone, Copy)]
enum FieldRef {
    Range(usize, usize),
    Scratch(usize, usize),
}

enum Builder {
    I64(Int64Builder),
    I32(Int32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Date(Date32Builder),
    Ts(TimestampMillisecondBuilder, Option<Arc<str>>),
}

#[derive(Clone, Copy)]
enum Value {
    Null,
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(FieldRef),
}

fn parse_block(plan: &ParsePlan, work: &Work) -> Result<CsvBlock> {
    let data = &work.data;
    let ncols = plan.output.fields().len();
    let est_rows = data.len() / 100 + 16;
    let mut builders: Vec<Builder> = plan
        .output
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Int64 => Builder::I64(Int64Builder::with_capacity(est_rows)),
            DataType::Int32 => Builder::I32(Int32Builder::with_capacity(est_rows)),
            DataType::Float64 => Builder::F64(Float64Builder::with_capacity(est_rows)),
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(est_rows)),
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(est_rows)),
            DataType::Timestamp(_, tz) => Builder::Ts(
                TimestampMillisecondBuilder::with_capacity(est_rows),
                tz.clone(),
            ),
            _ => Builder::Str(StringBuilder::with_capacity(est_rows, est_rows * 8)),
        })
        .collect();
    let mut rejects = Vec::new();
    let mut records = 0u64;
    let mut pos = 0usize;
    let mut line = work.first_line;
    let mut fields: Vec<FieldRef> = vec![FieldRef::Range(0, 0); ncols];
    let mut values: Vec<Value> = vec![Value::Null; ncols];
    let mut scratch: Vec<u8> = Vec::new();

    while pos < data.len() {
        let rec_start = pos;
        let rec_line = line;
        scratch.clear();
        // Skip blank lines: they hold no data (and every CSV tool ignores them).
        if data[pos] == b'\n' || (data[pos] == b'\r' && data.get(pos + 1) == Some(&b'\n')) {
            pos += if data[pos] == b'\n' { 1 } else { 2 };
            line += 1;
            continue;
        }
        let mut field_idx = 0usize;
        let mut error: Option<(Option<usize>, String)> = None;
        loop {
            let (fref, next, ended) = if data[pos] == b'"' {
                // Quoted field: "" is an escaped quote; newlines inside are data.
                let s = scratch.len();
                let mut i = pos + 1;
                let mut closed = false;
                while let Some(q) = memchr::memchr(b'"', &data[i..]) {
                    let q = i + q;
                    line += memchr::memchr_iter(b'\n', &data[i..q]).count() as u64;
                    scratch.extend_from_slice(&data[i..q]);
                    if data.get(q + 1) == Some(&b'"') {
                        scratch.push(b'"');
                        i = q + 2;
                    } else {
                        i = q + 1;
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    line += memchr::memchr_iter(b'\n', &data[i..]).count() as u64;
                    error.get_or_insert((None, "unterminated quoted field".into()));
                    (FieldRef::Scratch(s, scratch.len()), data.len(), true)
                } else {
                    let fref = FieldRef::Scratch(s, scratch.len());
                    match data.get(i) {
                        None => (fref, i, true),
                        Some(b',') => (fref, i + 1, false),
                        Some(b'\n') => (fref, i + 1, true),
                        Some(b'\r') if data.get(i + 1) == Some(&b'\n') => (fref, i + 2, true),
                        Some(_) => {
                            // Garbage after the closing quote: skip to the end of the line.
                            error.get_or_insert((
                                plan.field_to_output.get(field_idx).copied().flatten(),
                                "unexpected character after a closing quote".into(),
                            ));
                            let end =
                                memchr::memchr(b'\n', &data[i..]).map_or(data.len(), |e| i + e + 1);
                            (fref, end, true)
                        }
                    }
                }
            } else {
                match memchr::memchr2(b',', b'\n', &data[pos..]) {
                    Some(off) if data[pos + off] == b',' => {
                        (FieldRef::Range(pos, pos + off), pos + off + 1, false)
                    }
                    Some(off) => {
                        let end = if off > 0 && data[pos + off - 1] == b'\r' {
                            pos + off - 1
                        } else {
                            pos + off
                        };
                        (FieldRef::Range(pos, end), pos + off + 1, true)
                    }
                    None => {
                        let end = if data.last() == Some(&b'\r') {
                            data.len() - 1
                        } else {
                            data.len()
                        };
                        (FieldRef::Range(pos, end), data.len(), true)
                    }
                }
            };
            if let Some(Some(out)) = plan.field_to_output.get(field_idx) {
                fields[*out] = fref;
            }
            field_idx += 1;
            pos = next;
            if ended {
                break;
            }
            if pos >= data.len() {
                // A trailing comma at the end of the file: one more, empty field.
                field_idx += 1;
                break;
            }
        }
        line += 1;
        records += 1;
        let rec_end = pos;

        if error.is_none() && field_idx != plan.width {
            error = Some((
                None,
                format!("expected {} fields, found {field_idx}", plan.width),
            ));
        }
        if error.is_none() {
            for (col, field) in plan.output.fields().iter().enumerate() {
                let bytes = match fields[col] {
                    FieldRef::Range(a, b) => &data[a..b],
                    FieldRef::Scratch(a, b) => &scratch[a..b],
                };
                match parse_value(field.data_type(), bytes) {
                    Ok(Value::Null) if !field.is_nullable() => {
                        error = Some((Some(col), "empty value in a required column".into()));
                        break;
                    }
                    Ok(Value::Str(_)) => {
                        if let Some(why) = plan.rules[col].and_then(|r| r.check_str(bytes)) {
                            error = Some((Some(col), why.into()));
                            break;
                        }
                        values[col] = Value::Str(fields[col]);
                    }
                    Ok(Value::I64(v)) => {
                        if let Some(why) = plan.rules[col].and_then(|r| r.check_int(v)) {
                            error = Some((Some(col), why.into()));
                            break;
                        }
                        values[col] = Value::I64(v);
                    }
                    Ok(v) => values[col] = v,
                    Err(reason) => {
                        error = Some((Some(col), reason));
                        break;
                    }
                }
            }
        }
        match error {
            Some((col, reason)) => {
                let raw = &data[rec_start..rec_end];
                let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                rejects.push(Reject {
                    file: plan.file.clone(),
                    line: rec_line,
                    column: col.map(|c| plan.output.field(c).name().clone()),
                    reason,
                    raw: String::from_utf8_lossy(raw).into_owned(),
                });
            }
            None => {
                for (b, v) in builders.iter_mut().zip(&values) {
                    append(b, *v, data, &scratch);
                }
            }
        }
    }
    let columns: Vec<ArrayRef> = builders
        .into_iter()
        .map(|b| -> ArrayRef {
            match b {
                Builder::I64(mut b) => Arc::new(b.finish()),
                Builder::I32(mut b) => Arc::new(b.finish()),
                Builder::F64(mut b) => Arc::new(b.finish()),
                Builder::Bool(mut b) => Arc::new(b.finish()),
                Builder::Str(mut b) => Arc::new(b.finish()),
                Builder::Date(mut b) => Arc::new(b.finish()),
                Builder::Ts(mut b, tz) => Arc::new(b.finish().with_timezone_opt(tz)),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(plan.output.clone(), columns)?;
    Ok(CsvBlock {
        batch,
        records,
        rejects,
        bytes: data.len() as u64,
    })
}

fn append(b: &mut Builder, v: Value, data: &[u8], scratch: &[u8]) {
    match (b, v) {
        (Builder::I64(b), Value::I64(x)) => b.append_value(x),
        (Builder::I32(b), Value::I64(x)) => b.append_value(x as i32),
        (Builder::Date(b), Value::I64(x)) => b.append_value(x as i32),
        (Builder::Ts(b, _), Value::I64(x)) => b.append_value(x),
        (Builder::F64(b), Value::F64(x)) => b.append_value(x),
        (Builder::Bool(b), Value::Bool(x)) => b.append_value(x),
        (Builder::Str(b), Value::Str(r)) => {
            let bytes = match r {
                FieldRef::Range(a, e) => &data[a..e],
                FieldRef::Scratch(a, e) => &scratch[a..e],
            };
            // parse_value checked UTF-8 already.
            b.append_value(std::str::from_utf8(bytes).unwrap_or_default())
        }
        (Builder::I64(b), _) => b.append_null(),
        (Builder::I32(b), _) => b.append_null(),
        (Builder::Date(b), _) => b.append_null(),
        (Builder::Ts(b, _), _) => b.append_null(),
        (Builder::F64(b), _) => b.append_null(),
        (Builder::Bool(b), _) => b.append_null(),
        (Builder::Str(b), _) => b.append_null(),
    }
}

/// Parses one field; integers of narrower types come back as `I64` after a range check.
fn parse_value(dt: &DataType, bytes: &[u8]) -> std::result::Result<Value, String> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let shown = || String::from_utf8_lossy(bytes).into_owned();
    match dt {
        DataType::Int64 => parse_i64(bytes)
            .map(Value::I64)
            .ok_or_else(|| format!("not an integer: {:?}", shown())),
        DataType::Int32 => match parse_i64(bytes) {
            Some(v) if i32::try_from(v).is_ok() => Ok(Value::I64(v)),
            Some(_) => Err(format!("out of the int32 range: {:?}", shown())),
            None => Err(format!("not an integer: {:?}", shown())),
        },
        DataType::Float64 => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(Value::F64)
            .ok_or_else(|| format!("not a number: {:?}", shown())),
        DataType::Boolean => match bytes {
            b"true" | b"TRUE" | b"True" => Ok(Value::Bool(true)),
            b"false" | b"FALSE" | b"False" => Ok(Value::Bool(false)),
            _ => Err(format!("not a boolean (true/false): {:?}", shown())),
        },
        DataType::Date32 => parse_date(bytes)
            .map(|d| Value::I64(d as i64))
            .ok_or_else(|| format!("not a YYYY-MM-DD date: {:?}", shown())),
        DataType::Timestamp(TimeUnit::Millisecond, _) => parse_timestamp_ms(bytes)
            .map(Value::I64)
            .ok_or_else(|| format!("not an RFC 3339 UTC timestamp: {:?}", shown())),
        _ => match std::str::from_utf8(bytes) {
            Ok(_) => Ok(Value::Str(FieldRef::Range(0, 0))),
            Err(_) => Err("not valid UTF-8".into()),
        },
    }
}

/// Parses a decimal integer with an optional sign; `None` on anything else or on overflow.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (neg, digits) = match bytes.first()? {
        b'-' => (true, &bytes[1..]),
        b'+' => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(d as i64)?;
    }
    if neg { Some(v) } else { v.checked_neg() }
}

fn digits<const N: usize>(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(..N)? {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u32;
    }
    Some(v)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_date(b: &[u8]) -> Option<i32> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (
        digits::<4>(b)? as i32,
        digits::<2>(&b[5..])?,
        digits::<2>(&b[8..])?,
    );
    // A cheap range check (called once per timestamp of every export row).
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > month_days {
        return None;
    }
    Some(crate::time::days_from_civil(y, m, d))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fff...][Z|+00:00]`. Other offsets are
/// converted to UTC; no offset means UTC (the export's convention).
pub fn parse_timestamp_ms(b: &[u8]) -> Option<i64> {
    if b.len() < 19 || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = parse_date(&b[..10])? as i64;
    let (h, mi, s) = (
        digits::<2>(&b[11..])?,
        digits::<2>(&b[14..])?,
        digits::<2>(&b[17..])?,
    );
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + (b[i] - b'0') as u32;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            ms *= 10;
        }
    }
    let offset_s: i64 = match &b[i..] {
        b"" | b"Z" | b"z" | b"+00:00" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let secs = (digits::<2>(rest)? * 3600 + digits::<2>(&rest[3..])? * 60) as i64;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    Some(((days * 86_400 + (h * 3600 + mi * 60 + s) as i64 - offset_s) * 1000) + ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::PLAYS;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Int32Type, Int64Type};
    use std::io::Write;

    const HEADER: &str = "play_id,user_id,session_id,song_id,artist_id,album_id,played_at,ms_played,track_ms,platform,country,source,shuffle,offline,client_version\n";

    fn row(id: i64, ms: &str) -> String {
        format!(
            "{id},7,abc,11,3,5,2026-11-26T13:45:12.345Z,{ms},200000,ios,SE,playlist,true,false,8.9.1\n"
        )
    }

    fn decode(text: &str, block: usize, threads: usize) -> (Vec<RecordBatch>, Vec<Reject>, u64) {
        decode_bytes(text.as_bytes(), block, threads)
    }

    fn decode_bytes(
        bytes: &[u8],
        block: usize,
        threads: usize,
    ) -> (Vec<RecordBatch>, Vec<Reject>, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let dec = CsvDecoder::open(
            f.path(),
            &PLAYS,
            &["user_id", "song_id", "played_at", "ms_played", "country"],
            CsvOptions {
                block_size: block,
                threads,
            },
        )
        .unwrap();
        let (mut batches, mut rejects, mut records) = (vec![], vec![], 0);
        for b in dec.blocks() {
            let b = b.unwrap();
            records += b.records;
            rejects.extend(b.rejects);
            batches.push(b.batch);
        }
        (batches, rejects, records)
    }

    /// Rows (formatted), rejects and records of a decode, comparable across block sizes (each
    /// decode reads its own temporary file: the rejects' file name is left out).
    fn summary(bytes: &[u8], block: usize) -> (Vec<String>, Vec<Reject>, u64) {
        let (batches, mut rejects, records) = decode_bytes(bytes, block, 2);
        for r in &mut rejects {
            r.file.clear();
        }
        let rows = batches
            .iter()
            .flat_map(|b| {
                let cols: Vec<_> = b
                    .columns()
                    .iter()
                    .map(|c| {
                        arrow::util::display::ArrayFormatter::try_new(
                            c.as_ref(),
                            &Default::default(),
                        )
                        .unwrap()
                    })
                    .collect();
                (0..b.num_rows()).map(move |r| {
                    cols.iter()
                        .map(|c| c.value(r).to_string())
                        .collect::<Vec<_>>()
                        .join("|")
                })
            })
            .collect();
        (rows, rejects, records)
    }

    #[test]
    fn the_reader_stays_within_its_window_of_a_paused_consumer() {
        // Counts what the decoder pulled from its source.
        struct Counting(std::io::Cursor<Vec<u8>>, Arc<std::sync::atomic::AtomicU64>);
        impl Read for Counting {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1
                    .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                Ok(n)
            }
        }
        let mut text = HEADER.to_string();
        for i in 0..60_000 {
            text += &row(i, "31000");
        }
        let (threads, block) = (8, 64 << 10);
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let source = Counting(std::io::Cursor::new(text.into_bytes()), read.clone());
        let decoder = CsvDecoder::from_reader(
            "window.csv".into(),
            Box::new(source),
            &PLAYS,
            &["play_id"],
            CsvOptions {
                block_size: block,
                threads,
            },
        )
        .unwrap();
        let mut blocks = decoder.blocks();
        let mut rows = blocks.next().unwrap().unwrap().batch.num_rows();
        // Give the reader and the workers time to run as far ahead as they can.
        std::thread::sleep(std::time::Duration::from_millis(500));
        // The header read, then each admitted block and the one the reader waits to cut. Without
        // the window, the channels and the workers alone would hold 3 * threads + 3 blocks.
        let bound = (1 + window_blocks(threads) + 2) * block as u64;
        let ahead = read.load(std::sync::atomic::Ordering::SeqCst);
        assert!(ahead <= bound, "read {ahead} bytes ahead, bound {bound}");
        assert!(
            ahead > 4 * block as u64,
            "the reader did not run ahead at all: {ahead}"
        );
        for b in blocks {
            rows += b.unwrap().batch.num_rows();
        }
        assert_eq!(rows, 60_000);
    }

    #[test]
    fn records_do_not_depend_on_the_block_size() {
        let mut bodies: Vec<Vec<u8>> = vec![
            // `make fuzz` found this one: a stray `"` inside an unquoted field (`d",`) made the
            // splitter think a quoted field was open, while the parser read it as data.
            b"207830c6e\x01\x00d\",\",e,8.8.0\nalse,8.0.0\n.0\npl\x01alist,false,false,8.8.0"
                .to_vec(),
        ];
        // Quotes in every position the grammar distinguishes, with newlines inside and after.
        let mut quoted = Vec::new();
        quoted.extend_from_slice(row(1, "1000").as_bytes());
        quoted.extend_from_slice(
            b"2,7,\"ab\nc\",11,3,5,2026-11-26T13:45:12.345Z,1,1,ios,SE,x,true,false,1\n",
        );
        quoted.extend_from_slice(
            b"3,7,a\"b,11,3,5,2026-11-26T13:45:12.345Z,1,1,ios,SE,x,true,false,\"8.\"\"9\"\n",
        );
        quoted.extend_from_slice(b"4,7,\"x\"y,\"z\n5,7,\"\"\"\",11,3,5,2026-11-26T13:45:12.345Z,1,1,ios,SE,x,true,false,1\r\n");
        quoted.extend_from_slice(
            b"\n\"6\",7,abc,11,3,5,2026-11-26T13:45:12.345Z,1,1,ios,SE,x,true,false,\"1\"\r\n",
        );
        quoted.extend_from_slice(row(7, "1000").as_bytes());
        bodies.push(quoted);
        for body in bodies {
            let mut file = HEADER.as_bytes().to_vec();
            file.extend_from_slice(&body);
            let whole = summary(&file, 1 << 20);
            assert_eq!(
                whole.2,
                whole.0.len() as u64 + whole.1.len() as u64,
                "records = rows + rejects"
            );
            for block in 1..=file.len() {
                assert_eq!(summary(&file, block), whole, "block size {block}");
            }
        }
    }

    #[test]
    fn bad_rows_become_rejects_with_line_and_column() {
        let mut text = HEADER.to_string();
        text += &row(1, "31000");
        text += "2,x,abc,11,3,5,2026-11-26T00:00:00Z,1,1,ios,SE,radio,true,false,1\n"; // line 3: user_id
        text += "3,7,abc\n"; // line 4: too few fields
        text += &row(4, "abc"); // line 5: ms_played
        text += "5,7,abc,11,3,5,2026-13-26T00:00:00Z,1,1,ios,SE,radio,true,false,1\n"; // line 6
        text += "\n"; // blank: skipped
        text += &row(6, "1000"); // line 8
        for (block, threads) in [(1 << 20, 1), (40, 3)] {
            let (batches, rejects, records) = decode(&text, block, threads);
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!((rows, records), (2, 6), "block {block}");
            let got: Vec<_> = rejects.iter().map(|r| (r.line, r.column.clone())).collect();
            assert_eq!(
                got,
                [
                    (3, Some("user_id".to_string())),
                    (4, None),
                    (5, Some("ms_played".to_string())),
                    (6, Some("played_at".to_string()))
                ]
            );
            assert_eq!(rejects[1].reason, "expected 15 fields, found 3");
            assert_eq!(rejects[1].raw, "3,7,abc");
        }
    }

    #[test]
    fn rows_breaking_the_contracts_rules_are_rejected() {
        let mut text = HEADER.to_string();
        text += &row(1, "-5"); // line 2: a negative duration
        text += "2,7,abc,11,3,5,2026-11-26T13:45:12.345Z,1000,200000,ios,U\0S,x,true,false,1\n";
        text += "3,7,abc,11,3,5,2026-11-26T13:45:12.345Z,1000,200000,ios,se,x,true,false,1\n";
        text += &row(4, "1000");
        let (batches, rejects, _) = decode(&text, 1 << 20, 1);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let got: Vec<(u64, &str)> = rejects
            .iter()
            .map(|r| (r.line, r.column.as_deref().unwrap()))
            .collect();
        assert_eq!(got, [(2, "ms_played"), (3, "country"), (4, "country")]);
        assert_eq!(rejects[0].reason, "negative duration");
    }

    #[test]
    fn gzip_and_zstd_exports_decode_like_plain_ones() {
        let mut text = HEADER.to_string();
        for i in 0..3000 {
            text += &row(i, "30000");
        }
        text += &row(3000, "abc");
        let plain = decode(&text, 4096, 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(text.as_bytes(), 3).unwrap();
        let lines = |rejects: &[Reject]| -> Vec<(u64, Option<String>, String)> {
            rejects
                .iter()
                .map(|r| (r.line, r.column.clone(), r.raw.clone()))
                .collect()
        };
        for compressed in [gz.clone(), zst] {
            let got = decode_bytes(&compressed, 4096, 2);
            assert_eq!(got.0, plain.0);
            assert_eq!(
                lines(&got.1),
                lines(&plain.1),
                "the same rejects, lines included"
            );
            assert_eq!(got.2, plain.2);
        }
        // A truncated gzip is bad input, not a temporary failure.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&gz[..gz.len() / 2]).unwrap();
        let dec = CsvDecoder::open(f.path(), &PLAYS, &["user_id"], CsvOptions::default()).unwrap();
        let err = dec.blocks().find_map(|b| b.err()).expect("an error");
        assert_eq!(err.exit_code(), crate::ExitCode::DataErr, "{err}");
        // Another compression is refused with what it is.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"BZh91AY&SY").unwrap();
        let err = CsvDecoder::open(f.path(), &PLAYS, &["user_id"], CsvOptions::default())
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), crate::ExitCode::DataErr);
        assert!(err.to_string().contains("bzip2-compressed"), "{err}");
    }

    #[test]
    fn quoted_fields_with_commas_quotes_and_newlines() {
        let mut text = HEADER.to_string();
        text += "1,7,\"a,\"\"b\"\"\nc\",11,3,5,2026-11-26T13:45:12.345Z,31000,2,ios,\"SE\",x,true,false,1\r\n";
        text += &row(2, "x"); // physical line 4, after the quoted newline
        let (batches, rejects, _) = decode(&text, 1 << 20, 2);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let b = &batches[0];
        assert_eq!(b.column(4).as_string::<i32>().value(0), "SE");
        assert_eq!(b.column(3).as_primitive::<Int32Type>().value(0), 31000);
        assert_eq!(rejects[0].line, 4);
    }

    #[test]
    fn blocks_come_back_in_file_order() {
        let mut text = HEADER.to_string();
        for i in 0..5000 {
            text += &row(i, "30000");
        }
        let (batches, rejects, records) = decode(&text, 997, 4);
        assert!(rejects.is_empty());
        assert_eq!(records, 5000);
        assert!(batches.len() > 10);
        let users: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(users.len(), 5000);
        let _ = Int64Array::from(users);
    }

    #[test]
    fn missing_header_column_is_an_input_error() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"play_id,user_id\n1,2\n").unwrap();
        let err = CsvDecoder::open(f.path(), &PLAYS, &["user_id"], CsvOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, Error::Input { line: 1, .. }), "{err}");
    }

    #[test]
    fn timestamps_and_integers() {
        assert_eq!(parse_timestamp_ms(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp_ms(b"2026-11-26T14:45:12.3+01:00"),
            parse_timestamp_ms(b"2026-11-26T13:45:12.300Z")
        );
        assert_eq!(
            parse_timestamp_ms(b"2026-11-26 13:45:12"),
            parse_timestamp_ms(b"2026-11-26T13:45:12.000Z")
        );
        assert_eq!(parse_timestamp_ms(b"2026-02-30T00:00:00Z"), None);
        // Every day and every non-day of 1896..2104 agrees with chrono (leap years included).
        for y in 1896..2104 {
            for m in 0..=13 {
                for d in 0..=32 {
                    let text = format!("{y:04}-{m:02}-{d:02}");
                    let want = chrono::NaiveDate::from_ymd_opt(y, m, d).map(crate::time::date32);
                    assert_eq!(parse_date(text.as_bytes()), want, "{text}");
                }
            }
        }
        assert_eq!(parse_timestamp_ms(b"2026-11-26T24:00:00Z"), None);
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"12a"), None);
        assert_eq!(parse_i64(b"-"), None);
        let chrono_ms = chrono::DateTime::parse_from_rfc3339("2026-11-26T13:45:12.345Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            parse_timestamp_ms(b"2026-11-26T13:45:12.345Z"),
            Some(chrono_ms)
        );
    }
}
