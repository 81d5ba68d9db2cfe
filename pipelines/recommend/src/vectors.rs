//! Reading the two vector datasets: the song catalog (loaded whole: it is the fixed side of the
//! product) and the users (streamed in blocks).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, col};
use streampulse_core::rejects::{Reject, RejectSink};
use streampulse_core::schema::EMBEDDING_DIM;

use crate::error::{Error, Result};

/// The song catalog: ids ascending (so a smaller index is a smaller id, which the top-K tie rule
/// relies on) and their vectors, row-major.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub ids: Vec<i64>,
    pub dim: usize,
    pub vectors: Vec<f32>,
    index: HashMap<i64, u32>,
}

impl Catalog {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The catalog index of a song id.
    pub fn index_of(&self, song_id: i64) -> Option<u32> {
        self.index.get(&song_id).copied()
    }

    /// Builds a catalog from (id, vector) pairs in any order; duplicate ids are an error.
    pub fn new(dim: usize, mut songs: Vec<(i64, Vec<f32>)>) -> Result<Self> {
        songs.sort_by_key(|s| s.0);
        if let Some(w) = songs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::Inconsistent(format!(
                "song {} has more than one embedding",
                w[0].0
            )));
        }
        let ids: Vec<i64> = songs.iter().map(|s| s.0).collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        let vectors = songs.into_iter().flat_map(|s| s.1).collect();
        Ok(Catalog {
            ids,
            dim,
            vectors,
            index,
        })
    }
}

/// Reads `id` and the vector column `vectors` of a vector dataset in the contract's types,
/// whoever wrote it (int32 ids, embeddings as lists of float32 or float64: see
/// [`streampulse_core::conform`]), and the vectors' width. A fixed-size list keeps its own width
/// (the dimension is the data's); a variable list must have the contract's width in every row.
async fn read_vectors(
    ctx: &SessionContext,
    url: &str,
    id: &'static str,
    vectors: &'static str,
) -> Result<(usize, DataFrame)> {
    let df = ctx.read_parquet(url, ParquetReadOptions::default()).await?;
    for column in [id, vectors] {
        if df.schema().field_with_unqualified_name(column).is_err() {
            return Err(missing(url, column));
        }
    }
    let dim = match df
        .schema()
        .field_with_unqualified_name(vectors)
        .map_err(|_| missing(url, vectors))?
        .data_type()
    {
        DataType::FixedSizeList(_, n) => *n,
        _ => EMBEDDING_DIM,
    };
    let contract = Arc::new(Schema::new(vec![
        Field::new(id, DataType::Int64, false),
        Field::new(
            vectors,
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dim),
            false,
        ),
    ]));
    let df = streampulse_core::engine::read_parquet(
        ctx,
        vec![url.to_string()],
        &contract,
        &[id, vectors],
    )
    .await?;
    Ok((dim as usize, df))
}

fn missing(url: &str, column: &str) -> Error {
    Error::Core(streampulse_core::Error::Input {
        file: url.to_string(),
        line: 0,
        column: column.to_string(),
        reason: "missing column".into(),
    })
}

/// One row's vector, or why it cannot be used.
fn row_vector<'a>(
    list: &'a arrow::array::FixedSizeListArray,
    values: &'a Float32Array,
    dim: usize,
    i: usize,
) -> std::result::Result<&'a [f32], &'static str> {
    if list.is_null(i) {
        return Err("null vector");
    }
    let start = list.value_offset(i) as usize;
    if values.null_count() > 0 && (start..start + dim).any(|j| values.is_null(j)) {
        return Err("null component");
    }
    let v = &values.values()[start..start + dim];
    if v.iter().any(|x| !x.is_finite()) {
        return Err("component not a finite number");
    }
    Ok(v)
}

/// What holding a catalog of `songs` x `dim` costs at its peak: the decoded batches, the
/// (id, vector) pairs being sorted and the catalog itself (three copies of the vectors), plus the
/// scoring's working set. Measured: a 76 MB catalog peaks at about 250 MB of RSS.
pub fn catalog_bytes_needed(songs: u64, dim: usize) -> u64 {
    3 * songs * (dim as u64 * 4 + 24) + (16 << 20)
}

/// Loads `song_embeddings`, rejecting unusable rows. The catalog is held whole (it is the fixed
/// side of the product): a `budget` below what it needs is refused up front (exit 64, with the
/// figure), not overrun.
pub async fn catalog(
    ctx: &SessionContext,
    url: &str,
    budget: u64,
    rejects: &mut RejectSink,
) -> Result<Catalog> {
    let (dim, df) = read_vectors(ctx, url, "song_id", "embedding").await?;
    let songs = df.clone().count().await? as u64;
    let needed = catalog_bytes_needed(songs, dim);
    if needed > budget {
        return Err(Error::Config(format!(
            "--memory-limit {} is below the {} this catalog needs ({songs} songs x {dim} \
             dimensions, held whole while scoring): raise it",
            streampulse_core::config::ByteSize(budget),
            streampulse_core::config::ByteSize(needed.next_multiple_of(1 << 20)),
        )));
    }
    let mut songs = Vec::new();
    let mut line = 0u64;
    for batch in df.collect().await? {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let list = batch.column(1).as_fixed_size_list();
        let values = list
            .values()
            .as_primitive::<arrow::datatypes::Float32Type>();
        for i in 0..batch.num_rows() {
            let reason = if ids.is_null(i) {
                Some(("song_id", "null song_id"))
            } else {
                match row_vector(list, values, dim, i) {
                    Ok(v) => {
                        songs.push((ids.value(i), v.to_vec()));
                        None
                    }
                    Err(why) => Some(("embedding", why)),
                }
            };
            if let Some((column, why)) = reason {
                rejects.push(&Reject {
                    file: url.to_string(),
                    line,
                    column: Some(column.into()),
                    reason: why.into(),
                    raw: format!(
                        "{{\"song_id\":{}}}",
                        ids.is_valid(i)
                            .then(|| ids.value(i))
                            .map_or("null".into(), |v| v.to_string())
                    ),
                })?;
            }
            line += 1;
        }
    }
    Catalog::new(dim, songs)
}

/// The users' rows, in file order (one engine partition) or sorted by user_id.
pub async fn users(
    ctx: &SessionContext,
    url: &str,
    sort: bool,
) -> Result<(usize, SendableRecordBatchStream)> {
    let (dim, df) = read_vectors(ctx, url, "user_id", "features").await?;
    let df = if sort {
        df.sort(vec![col("user_id").sort(true, false)])?
    } else {
        df
    };
    // Decoding on its own task overlaps with scoring.
    Ok((dim, streampulse_core::stream::spawned(df, 4)))
}

/// A block of users to score: ids and vectors (row-major), with each user's excluded songs.
#[derive(Debug, Default, Clone)]
pub struct Block {
    pub users: Vec<i64>,
    pub vectors: Vec<f32>,
    /// Catalog indices, ascending, per user.
    pub excluded: Vec<Vec<u32>>,
}

impl Block {
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The usable rows of a user batch: `(row, user_id, vector)`; the rest go to the rejects.
pub fn usable_users<'a>(
    batch: &'a RecordBatch,
    dim: usize,
    url: &str,
    first_line: u64,
    rejects: &mut RejectSink,
) -> Result<Vec<(usize, i64, &'a [f32])>> {
    let ids = batch.column(0).as_primitive::<Int64Type>();
    let list = batch.column(1).as_fixed_size_list();
    let values = list
        .values()
        .as_primitive::<arrow::datatypes::Float32Type>();
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let problem = if ids.is_null(i) {
            Some(("user_id", "null user_id"))
        } else {
            match row_vector(list, values, dim, i) {
                Ok(v) => {
                    out.push((i, ids.value(i), v));
                    None
                }
                Err(why) => Some(("features", why)),
            }
        };
        if let Some((column, why)) = problem {
            rejects.push(&Reject {
                file: url.to_string(),
                line: first_line + i as u64,
                column: Some(column.into()),
                reason: why.into(),
                raw: format!(
                    "{{\"user_id\":{}}}",
                    ids.is_valid(i)
                        .then(|| ids.value(i))
                        .map_or("null".into(), |v| v.to_string())
                ),
            })?;
        }
    }
    Ok(out)
}
