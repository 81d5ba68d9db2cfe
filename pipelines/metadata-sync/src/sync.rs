//! The sync loop: walk the partner's change feed from the stored cursor, fetch the changed songs
//! concurrently, and commit them in feed order, batch by batch, each batch with the cursor that
//! ends it.
//!
//! Feed pages are fetched ahead by their own task (with the stored entity tags of their songs,
//! for `If-None-Match`) so the detail requests never wait for a page. Details are started up to
//! `window` ahead of the oldest unfinished one but *yielded in feed order*: a batch is committed
//! only when every song before its end is in, so the cursor never passes a song that is not in
//! the database. A song that stalls (retries, a timeout) holds the commit back, not the other
//! requests, as long as the window covers the requests of one timeout (`reorder_window`).

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use streampulse_core::songs::Change;

use crate::client::{ApiClient, Fetched};
use crate::db::{CatalogDb, Cursor};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Names the partner in the cursor table (one database can follow several).
    pub source: String,
    /// Ignore the stored cursor and walk the whole feed.
    pub full: bool,
    pub page_size: usize,
    /// Feed entries per transaction.
    pub batch_size: usize,
    /// Detail requests started ahead of the oldest unfinished one.
    pub window: usize,
}

/// What a sync did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncStats {
    /// Feed entries walked.
    pub listed: u64,
    /// Songs fetched in full.
    pub fetched: u64,
    /// Songs whose stored entity tag was current (304).
    pub not_modified: u64,
    /// Songs deleted between listing and fetching (404).
    pub gone: u64,
    /// Songs inserted or really changed in the database.
    pub changed: u64,
    pub transactions: u64,
    /// Where the feed starts next time.
    pub cursor: Option<String>,
    #[serde(skip)]
    pub changed_ids: Vec<i64>,
}

type FeedItem = Result<(Change, Option<String>)>;

pub async fn run(db: &CatalogDb, client: Arc<ApiClient>, opts: &SyncOptions) -> Result<SyncStats> {
    let start = if opts.full {
        None
    } else {
        db.cursor(&opts.source).await?
    };
    match &start {
        Some(c) => {
            tracing::info!(updated_at = %c.updated_at, song_id = c.song_id, "resuming from the stored cursor")
        }
        None => tracing::info!(full = opts.full, "walking the whole change feed"),
    }
    let (tx, rx) = mpsc::channel::<FeedItem>(opts.page_size.max(1) * 2);
    let producer = tokio::spawn(feed(db.clone(), client.clone(), start, opts.page_size, tx));
    let _abort_producer = AbortOnDrop(producer);

    let details = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .map(|item: FeedItem| {
        let client = client.clone();
        async move {
            let (change, etag) = item?;
            let fetched = client.song(change.song_id, etag.as_deref()).await?;
            Ok::<_, Error>((change, fetched))
        }
    })
    .buffered(opts.window.max(1));
    let mut details = std::pin::pin!(details);

    let mut stats = SyncStats::default();
    let mut batch = Vec::with_capacity(opts.batch_size);
    let mut pending = 0usize;
    let mut last: Option<Cursor> = None;
    loop {
        let next = details.next().await;
        let (change, fetched) = match next {
            Some(Ok(item)) => item,
            end => {
                // Whatever happens next, what is complete gets committed first.
                commit(db, opts, &mut batch, &mut pending, last, &mut stats).await?;
                match end {
                    Some(Err(e)) => return Err(e),
                    _ => break,
                }
            }
        };
        stats.listed += 1;
        match fetched {
            Fetched::Song(song, etag) => {
                stats.fetched += 1;
                batch.push((*song, etag));
            }
            Fetched::NotModified => stats.not_modified += 1,
            Fetched::Gone => stats.gone += 1,
        }
        last = Some(Cursor {
            updated_at: change.updated_at,
            song_id: change.song_id,
        });
        pending += 1;
        if pending >= opts.batch_size {
            commit(db, opts, &mut batch, &mut pending, last, &mut stats).await?;
        }
    }
    Ok(stats)
}

async fn commit(
    db: &CatalogDb,
    opts: &SyncOptions,
    batch: &mut Vec<(streampulse_core::songs::SongRecord, String)>,
    pending: &mut usize,
    last: Option<Cursor>,
    stats: &mut SyncStats,
) -> Result<()> {
    let Some(cursor) = last else { return Ok(()) };
    if *pending == 0 {
        return Ok(());
    }
    let changed = db.commit(&opts.source, batch, cursor).await?;
    stats.changed += changed.len() as u64;
    stats.changed_ids.extend(changed);
    stats.transactions += 1;
    stats.cursor = Some(format!(
        "{} song {}",
        cursor
            .updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        cursor.song_id
    ));
    tracing::debug!(entries = *pending, songs = batch.len(), cursor = ?stats.cursor, "committed");
    batch.clear();
    *pending = 0;
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Walks the feed after `start` and sends its entries, each with our stored entity tag.
async fn feed(
    db: CatalogDb,
    client: Arc<ApiClient>,
    start: Option<Cursor>,
    page_size: usize,
    tx: mpsc::Sender<FeedItem>,
) {
    let result: Result<()> = async {
        // The feed filter is inclusive (`updated_at >= since`), so entries at the cursor's
        // instant come again; those at or before the cursor itself are skipped here.
        let since = start.map(|c| c.updated_at);
        let mut page_cursor: Option<String> = None;
        let mut previous: Option<(chrono::DateTime<chrono::Utc>, i64)> = None;
        loop {
            let page = client
                .changes(since, page_cursor.as_deref(), page_size)
                .await?;
            let mut entries = Vec::with_capacity(page.songs.len());
            for change in page.songs {
                let key = (change.updated_at, change.song_id);
                if previous.is_some_and(|p| key <= p) {
                    return Err(Error::Api {
                        what: "GET /songs".into(),
                        reason: format!(
                            "the change feed is out of order at song {} ({}): entries must \
                             ascend by (updated_at, song_id)",
                            change.song_id, change.updated_at
                        ),
                        unreachable: false,
                    });
                }
                previous = Some(key);
                if start.is_none_or(|s| key > (s.updated_at, s.song_id)) {
                    entries.push(change);
                }
            }
            let ids: Vec<i64> = entries.iter().map(|c| c.song_id).collect();
            let mut etags = db.etags(&ids).await?;
            for change in entries {
                let etag = etags.remove(&change.song_id);
                if tx.send(Ok((change, etag))).await.is_err() {
                    return Ok(()); // the consumer stopped (an error there)
                }
            }
            match page.next_cursor {
                Some(next) => page_cursor = Some(next),
                None => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
}
