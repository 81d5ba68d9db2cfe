//! What the fuzz targets share: decoding a whole CSV file into a comparable summary.

use std::io::Cursor;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use streampulse_core::csv::{CsvDecoder, CsvOptions};
use streampulse_core::rejects::Reject;
use streampulse_core::schema::{PLAYS, PLAYS_COLUMNS};

/// The plays export's header line.
pub const HEADER: &str = "play_id,user_id,session_id,song_id,artist_id,album_id,played_at,\
ms_played,track_ms,platform,country,source,shuffle,offline,client_version\n";

/// Everything a decode produced, in file order.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub records: u64,
    pub rows: u64,
    /// Every decoded row, formatted.
    pub values: Vec<String>,
    pub rejects: Vec<Reject>,
}

/// Decodes `file` (header included) in blocks of `block_size` bytes on two threads.
pub fn decode_all(file: &[u8], block_size: usize) -> Result<Decoded, String> {
    let decoder = CsvDecoder::from_reader(
        "fuzz.csv".into(),
        Box::new(Cursor::new(file.to_vec())),
        &PLAYS,
        &PLAYS_COLUMNS,
        CsvOptions {
            block_size,
            threads: 2,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut out = Decoded {
        records: 0,
        rows: 0,
        values: Vec::new(),
        rejects: Vec::new(),
    };
    for block in decoder.blocks() {
        let block = block.map_err(|e| e.to_string())?;
        out.records += block.records;
        out.rows += block.batch.num_rows() as u64;
        let opts = FormatOptions::default();
        let formatters: Vec<_> = block
            .batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..block.batch.num_rows() {
            let row: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            out.values.push(row.join(","));
        }
        out.rejects.extend(block.rejects);
    }
    Ok(out)
}
