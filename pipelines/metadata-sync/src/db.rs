//! The catalog database: SQLite (embedded default) or PostgreSQL, same tables, same statements.
//!
//! Every statement is built with sqlx's `QueryBuilder`, which writes each backend's bind-parameter syntax,
//! and the code is shared through [`with_pool!`]: each arm is type-checked against its own
//! driver, so there is no lowest-common-denominator `Any` driver and chrono types map to native
//! `DATE`/`TIMESTAMPTZ` in PostgreSQL.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use futures::TryStreamExt;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};
use streampulse_core::schema::SONGS;
use streampulse_core::songs::{self, SongRecord};

use crate::error::{Error, Result};

/// The change-feed position whose songs are all committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub updated_at: DateTime<Utc>,
    pub song_id: i64,
}

#[derive(Clone)]
pub enum CatalogDb {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

const SONG_COLUMNS: &str = "song_id, title, artist_id, artist_name, album_id, label_id, isrc, \
                            duration_ms, release_date, genre, updated_at";

/// Runs `$body` with `$pool` bound to the concrete pool and `Db` to its driver type.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            CatalogDb::Sqlite($pool) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                $body
            }
            CatalogDb::Postgres($pool) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                $body
            }
        }
    };
}

impl CatalogDb {
    /// Connects (creating a SQLite file and its directory if missing) and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        // Boxed: sqlx's connect and migrate futures are large, and every caller would carry them.
        Box::pin(Self::connect_inner(url)).await
    }

    async fn connect_inner(url: &str) -> Result<Self> {
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| Error::config(format!("--database-url: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A committed cursor must survive a power cut along with its songs.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30));
            if let Some(dir) = opts.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| streampulse_core::Error::io(dir, e))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("../../shared/migrations/catalog/sqlite")
                .run(&pool)
                .await?;
            CatalogDb::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(15))
                .connect(url)
                .await?;
            sqlx::migrate!("../../shared/migrations/catalog/postgres")
                .run(&pool)
                .await?;
            CatalogDb::Postgres(pool)
        } else {
            return Err(Error::config(
                "--database-url must start with sqlite: or postgres://",
            ));
        };
        Ok(db)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            CatalogDb::Sqlite(_) => "sqlite",
            CatalogDb::Postgres(_) => "postgres",
        }
    }

    pub async fn cursor(&self, source: &str) -> Result<Option<Cursor>> {
        let row = with_pool!(self, pool => {
            let mut q = QueryBuilder::<Db>::new("SELECT updated_at, song_id FROM sync_cursor WHERE source = ");
            q.push_bind(source);
            q.build().fetch_optional(pool).await?.map(|r| -> Result<Cursor> {
                Ok(Cursor { updated_at: r.try_get(0)?, song_id: r.try_get(1)? })
            })
        });
        row.transpose()
    }

    /// The stored entity tags of those of `ids` we have.
    pub async fn etags(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        with_pool!(self, pool => {
            let mut q = QueryBuilder::<Db>::new("SELECT song_id, etag FROM songs WHERE song_id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            list.push_unseparated(")");
            let rows = q.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
                .collect()
        })
    }

    /// Upserts `songs` (only rows that really changed are written) and moves the cursor, in one
    /// transaction. Returns the ids of the songs that changed.
    pub async fn commit(
        &self,
        source: &str,
        songs: &[(SongRecord, String)],
        cursor: Cursor,
    ) -> Result<Vec<i64>> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut changed = Vec::new();
            // 12 parameters a row; 1,000 rows stay under every backend's parameter limit.
            for chunk in songs.chunks(1000) {
                let mut q = QueryBuilder::<Db>::new(format!("INSERT INTO songs ({SONG_COLUMNS}, etag) "));
                q.push_values(chunk, |mut row, (s, etag)| {
                    row.push_bind(s.song_id)
                        .push_bind(s.title.clone())
                        .push_bind(s.artist_id)
                        .push_bind(s.artist_name.clone())
                        .push_bind(s.album_id)
                        .push_bind(s.label_id)
                        .push_bind(s.isrc.clone())
                        .push_bind(s.duration_ms)
                        .push_bind(s.release_date)
                        .push_bind(s.genre.clone())
                        .push_bind(s.updated_at)
                        .push_bind(etag.clone());
                });
                q.push(UPSERT_TAIL);
                let rows = q.build().fetch_all(&mut *tx).await?;
                for r in rows {
                    changed.push(r.try_get::<i64, _>(0)?);
                }
            }
            let mut q = QueryBuilder::<Db>::new("INSERT INTO sync_cursor (source, updated_at, song_id) VALUES (");
            q.push_bind(source)
                .push(", ")
                .push_bind(cursor.updated_at)
                .push(", ")
                .push_bind(cursor.song_id)
                .push(") ON CONFLICT (source) DO UPDATE SET updated_at = excluded.updated_at, song_id = excluded.song_id");
            q.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Number of songs in the catalog.
    pub async fn count(&self) -> Result<u64> {
        with_pool!(self, pool => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM songs").fetch_one(pool).await?;
            Ok(n as u64)
        })
    }

    /// Every song, by id.
    pub async fn all_songs(&self) -> Result<Vec<SongRecord>> {
        let sql = format!("SELECT {SONG_COLUMNS} FROM songs ORDER BY song_id");
        with_pool!(self, pool => {
            Ok(sqlx::query_as::<Db, SongRecord>(sqlx::AssertSqlSafe(sql.as_str())).fetch_all(pool).await?)
        })
    }

    /// The whole catalog as `songs` batches of `batch_rows`, by song id, read with a cursor so
    /// memory holds one batch whatever the catalog's size.
    pub fn snapshot(&self, batch_rows: usize) -> SendableRecordBatchStream {
        let (tx, stream) = streampulse_core::stream::channel_stream(SONGS.clone(), 2);
        let db = self.clone();
        tokio::spawn(async move {
            let sql = format!("SELECT {SONG_COLUMNS} FROM songs ORDER BY song_id");
            let result: Result<()> = async {
                with_pool!(&db, pool => {
                    let mut rows = sqlx::query_as::<Db, SongRecord>(sqlx::AssertSqlSafe(sql.as_str())).fetch(pool);
                    let mut buf = Vec::with_capacity(batch_rows);
                    while let Some(song) = rows.try_next().await? {
                        buf.push(song);
                        if buf.len() == batch_rows {
                            let batch = songs::to_batch(&buf)?;
                            buf.clear();
                            if tx.send(Ok(batch)).await.is_err() {
                                return Ok(()); // the reader is gone (a failed write)
                            }
                        }
                    }
                    if !buf.is_empty() {
                        let _ = tx.send(Ok(songs::to_batch(&buf)?)).await;
                    }
                    Ok(())
                })
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(DataFusionError::External(Box::new(e)))).await;
            }
        });
        stream
    }
}

/// Only rows that really changed are written (and returned); an unchanged song costs no write,
/// no WAL and no dead tuple. `IS DISTINCT FROM` is in PostgreSQL and SQLite ≥ 3.39.
const UPSERT_TAIL: &str = " ON CONFLICT (song_id) DO UPDATE SET \
    title = excluded.title, artist_id = excluded.artist_id, artist_name = excluded.artist_name, \
    album_id = excluded.album_id, label_id = excluded.label_id, isrc = excluded.isrc, \
    duration_ms = excluded.duration_ms, release_date = excluded.release_date, \
    genre = excluded.genre, updated_at = excluded.updated_at, etag = excluded.etag \
    WHERE songs.title IS DISTINCT FROM excluded.title \
       OR songs.artist_id IS DISTINCT FROM excluded.artist_id \
       OR songs.artist_name IS DISTINCT FROM excluded.artist_name \
       OR songs.album_id IS DISTINCT FROM excluded.album_id \
       OR songs.label_id IS DISTINCT FROM excluded.label_id \
       OR songs.isrc IS DISTINCT FROM excluded.isrc \
       OR songs.duration_ms IS DISTINCT FROM excluded.duration_ms \
       OR songs.release_date IS DISTINCT FROM excluded.release_date \
       OR songs.genre IS DISTINCT FROM excluded.genre \
       OR songs.updated_at IS DISTINCT FROM excluded.updated_at \
       OR songs.etag IS DISTINCT FROM excluded.etag \
    RETURNING song_id";
