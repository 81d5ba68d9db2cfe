//! The partner API client: paced by a token bucket at the partner's rate, a bounded number of
//! requests in flight, `Retry-After` honoured (and a server-requested pause applies to every
//! request, not just the one that got the 429), exponential backoff with full jitter for 5xx,
//! timeouts and connection errors, and an error budget for the whole run.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use streampulse_core::config::Secret;
use streampulse_core::rate::TokenBucket;
use streampulse_core::songs::{ChangePage, SongRecord};
use tokio::sync::Semaphore;
use url::Url;

use crate::error::{Error, Result};

/// How the client treats the partner.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub token: Option<Secret<String>>,
    pub user_agent: String,
    /// Requests in flight at most, besides second copies of slow ones (a quarter as many).
    pub concurrency: usize,
    /// Requests a second we allow ourselves (the partner's published limit).
    pub rate: f64,
    /// Requests we may send at once after a quiet spell; small, so we never drain the partner's
    /// own bucket and ride its edge.
    pub burst: f64,
    /// One request, from connect to the last byte of the body.
    pub timeout: Duration,
    /// Attempts per request for 5xx, timeouts and connection errors.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// 429s tolerated for one request before it counts as failed.
    pub max_throttled: u32,
    /// Share of all requests that may fail before the run gives up...
    pub error_budget: f64,
    /// ...but never fewer than this many.
    pub error_budget_min: u64,
    /// Send a second copy of a request that is unanswered well past the partner's usual
    /// latency ([`Latencies::hedge_after`]); the first answer wins.
    pub hedge: bool,
}

/// Recent answer times of the partner, from the request sent to the body read: what "well past
/// its usual latency" means for hedging.
#[derive(Debug, Default)]
struct Latencies {
    recent: VecDeque<Duration>,
}

impl Latencies {
    /// Answers remembered: a few seconds of traffic at a partner's usual rate.
    const KEEP: usize = 256;
    /// Fewer answers than this say too little about the partner's latency.
    const MIN: usize = 32;

    fn record(&mut self, took: Duration) {
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
    }

    /// Twice the 95th percentile of the recent answers, at least 250 ms and at most half the
    /// timeout: a request that slow is most likely lost (a hung backend), and one copy more per
    /// such request costs about 1 in 20 of the slowest. A quarter of the timeout until enough
    /// answers are in.
    fn hedge_after(&self, timeout: Duration) -> Duration {
        if self.recent.len() < Self::MIN {
            return timeout / 4;
        }
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
        (p95 * 2).clamp(Duration::from_millis(250), timeout / 2)
    }
}

/// Counters of one run, for the run record and the log.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub connection_errors: AtomicU64,
    pub not_modified: AtomicU64,
    /// Second copies sent of requests slow to answer, and how many of those answered first.
    pub hedged: AtomicU64,
    pub hedges_won: AtomicU64,
    /// Response bodies received (feed pages and songs, the retried ones too): the run's input.
    pub body_bytes: AtomicU64,
}

impl ClientStats {
    fn failed(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
            + self.timeouts.load(Ordering::Relaxed)
            + self.connection_errors.load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "requests": get(&self.requests),
            "retries": get(&self.retries),
            "rate_limited": get(&self.rate_limited),
            "server_errors": get(&self.server_errors),
            "timeouts": get(&self.timeouts),
            "connection_errors": get(&self.connection_errors),
            "not_modified": get(&self.not_modified),
            "body_bytes": get(&self.body_bytes),
            "hedged": get(&self.hedged),
            "hedges_won": get(&self.hedges_won),
        })
    }
}

/// A song detail request's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    Song(Box<SongRecord>, String),
    /// Our stored entity tag is current.
    NotModified,
    /// Listed in the feed, deleted since (404).
    Gone,
}

pub struct ApiClient {
    http: reqwest::Client,
    cfg: ClientConfig,
    bucket: TokenBucket,
    in_flight: Semaphore,
    /// Second copies in flight at most (a quarter of `in_flight`, at least one). Not taken from
    /// `in_flight`: its slots are all held by requests waiting for a token whenever the sync
    /// runs at the rate, so a copy would never find one.
    hedges: Semaphore,
    latencies: Mutex<Latencies>,
    jitter: Mutex<Pcg64Mcg>,
    pub stats: ClientStats,
}

/// Parses `Retry-After`: delta-seconds or an HTTP date (RFC 9110 §10.2.3), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An error with its causes: reqwest's own message ("error sending request") hides the reason.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

enum Attempt {
    /// An answer to hand to the caller; its body was read to the end inside the retry loop, so a
    /// body cut off mid-way is a failed attempt like any other.
    Done(StatusCode, HeaderMap, Vec<u8>),
    Throttled(Option<Duration>),
    Failed(String, FailureKind),
}

#[derive(Debug, Clone, Copy)]
enum FailureKind {
    Server,
    Timeout,
    Connection,
}

impl ApiClient {
    pub fn new(cfg: ClientConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &cfg.token {
            let mut v = header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| Error::config("--api-token holds characters a header cannot"))?;
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(cfg.concurrency)
            .build()
            .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            http,
            bucket: TokenBucket::new(cfg.rate, cfg.burst),
            in_flight: Semaphore::new(cfg.concurrency.max(1)),
            hedges: Semaphore::new((cfg.concurrency / 4).max(1)),
            latencies: Mutex::new(Latencies::default()),
            jitter: Mutex::new(Pcg64Mcg::seed_from_u64(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            )),
            stats: ClientStats::default(),
            cfg,
        })
    }

    /// A page of the change feed: songs changed at or after `since`, from `cursor` on.
    pub async fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ChangePage> {
        let mut url = self.url("songs")?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(since) = since {
                q.append_pair(
                    "updated_since",
                    &since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
            }
            if let Some(c) = cursor {
                q.append_pair("cursor", c);
            }
            q.append_pair("limit", &limit.to_string());
        }
        let what = format!("GET {url}");
        let (status, _, body) = self.call(&url, None, &what).await?;
        if !status.is_success() {
            return Err(self.unexpected(&what, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Api {
            what,
            reason: format!("the change feed is not the expected JSON: {e}"),
            unreachable: false,
        })
    }

    /// One song, unless `etag` is still current.
    pub async fn song(&self, song_id: i64, etag: Option<&str>) -> Result<Fetched> {
        let url = self.url(&format!("songs/{song_id}"))?;
        let what = format!("GET {url}");
        let (status, headers, body) = self.call(&url, etag, &what).await?;
        match status {
            StatusCode::NOT_MODIFIED => {
                self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                Ok(Fetched::NotModified)
            }
            StatusCode::NOT_FOUND => Ok(Fetched::Gone),
            s if s.is_success() => {
                let song: SongRecord = serde_json::from_slice(&body).map_err(|e| Error::Api {
                    what: what.clone(),
                    reason: format!("the song is not the expected JSON: {e}"),
                    unreachable: false,
                })?;
                if song.song_id != song_id {
                    return Err(Error::Api {
                        what,
                        reason: format!("asked for song {song_id}, got {}", song.song_id),
                        unreachable: false,
                    });
                }
                let etag = headers
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| song.etag(), str::to_string);
                Ok(Fetched::Song(Box::new(song), etag))
            }
            s => Err(self.unexpected(&what, s, &body)),
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.cfg
            .base_url
            .join(path)
            .map_err(|e| Error::config(format!("--api-url {}: {e}", self.cfg.base_url)))
    }

    fn unexpected(&self, what: &str, status: StatusCode, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        Error::Api {
            what: what.to_string(),
            reason: format!("unexpected {status}: {text}"),
            unreachable: false,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .cfg
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cfg.backoff_max);
        let share: f64 = self
            .jitter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .random();
        // Full jitter, with a floor so that a retry never fires right away.
        ceiling.mul_f64(share).max(self.cfg.backoff_base / 4)
    }

    fn check_budget(&self) -> Result<()> {
        let requests = self.stats.requests.load(Ordering::Relaxed);
        let failed = self.stats.failed();
        let budget = self
            .cfg
            .error_budget_min
            .max((self.cfg.error_budget * requests as f64) as u64);
        if failed > budget {
            return Err(Error::ErrorBudget {
                failed,
                requests,
                budget,
            });
        }
        Ok(())
    }

    /// One attempt: a token, the request, and (when it is slow to answer and a slot is free) a
    /// second copy with a token of its own; the first answer that is not a failure wins.
    async fn attempt(&self, url: &Url, etag: Option<&str>) -> Attempt {
        self.bucket.acquire().await;
        let first = self.send(url, etag);
        if !self.cfg.hedge {
            return first.await;
        }
        let hedge_after = self
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hedge_after(self.cfg.timeout);
        tokio::pin!(first);
        tokio::select! {
            answer = &mut first => return answer,
            _ = tokio::time::sleep(hedge_after) => {}
        }
        let Ok(_slot) = self.hedges.try_acquire() else {
            return first.await;
        };
        self.stats.hedged.fetch_add(1, Ordering::Relaxed);
        let second = async {
            self.bucket.acquire().await;
            self.send(url, etag).await
        };
        tokio::pin!(second);
        tokio::select! {
            answer = &mut first => match answer {
                Attempt::Failed(..) => second.await,
                answer => answer,
            },
            answer = &mut second => match answer {
                Attempt::Failed(..) => first.await,
                answer => {
                    self.stats.hedges_won.fetch_add(1, Ordering::Relaxed);
                    answer
                }
            },
        }
    }

    /// Sends one request and reads its answer to the end.
    async fn send(&self, url: &Url, etag: Option<&str>) -> Attempt {
        let sent = tokio::time::Instant::now();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = self.http.get(url.clone());
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let classify = |e: &reqwest::Error| {
            if e.is_timeout() {
                FailureKind::Timeout
            } else if e.is_connect() {
                FailureKind::Connection
            } else {
                FailureKind::Server
            }
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(chain(&e), classify(&e)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Attempt::Throttled(wait);
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Attempt::Failed(format!("HTTP {status}"), FailureKind::Server);
        }
        match response.bytes().await {
            Ok(body) => {
                self.stats
                    .body_bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                self.latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(sent.elapsed());
                Attempt::Done(status, headers, body.to_vec())
            }
            Err(e) => Attempt::Failed(format!("reading the body: {}", chain(&e)), classify(&e)),
        }
    }

    /// One logical request with the whole retry policy around it.
    async fn call(
        &self,
        url: &Url,
        etag: Option<&str>,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>)> {
        // One slot for the whole call, retries and their backoff included. The requests waiting
        // for a slot queue in order (the semaphore is fair) without polling the token bucket, and
        // a retry, the oldest request of all, never queues again behind the ones started after
        // it: a request that hangs until its timeout then costs one timeout, not a second wait
        // for the whole window to drain.
        let _slot = self.in_flight.acquire().await;
        let mut failures = 0u32;
        let mut throttled = 0u32;
        loop {
            match self.attempt(url, etag).await {
                Attempt::Done(status, headers, body) => {
                    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                        return Err(Error::Unauthorized {
                            status: status.as_u16(),
                            what: what.to_string(),
                        });
                    }
                    return Ok((status, headers, body));
                }
                Attempt::Throttled(wait) => {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    throttled += 1;
                    if throttled > self.cfg.max_throttled {
                        return Err(Error::Api {
                            what: what.to_string(),
                            reason: format!("still rate limited after {throttled} answers of 429"),
                            unreachable: false,
                        });
                    }
                    // `Retry-After: 0` (or a date already past) must not turn into a busy
                    // loop: wait at least one backoff step. The pause holds every request,
                    // since the limit is the partner's, not this request's.
                    let wait = wait
                        .unwrap_or_else(|| self.backoff(throttled))
                        .max(self.cfg.backoff_base);
                    self.bucket.pause(wait);
                }
                Attempt::Failed(reason, kind) => {
                    match kind {
                        FailureKind::Server => &self.stats.server_errors,
                        FailureKind::Timeout => &self.stats.timeouts,
                        FailureKind::Connection => &self.stats.connection_errors,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    self.check_budget()?;
                    if failures >= self.cfg.max_attempts {
                        return Err(Error::Api {
                            what: what.to_string(),
                            reason: format!("{failures} attempts failed, the last with {reason}"),
                            unreachable: matches!(kind, FailureKind::Connection),
                        });
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%what, %reason, failures, "retrying");
                    tokio::time::sleep(self.backoff(failures)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_hedged_well_past_the_partners_usual_latency() {
        let timeout = Duration::from_secs(10);
        let mut l = Latencies::default();
        assert_eq!(
            l.hedge_after(timeout),
            Duration::from_millis(2500),
            "nothing known yet"
        );
        for i in 0..100u64 {
            // 300 ms answers, the slowest 5 of each 100 at 400 ms.
            l.record(Duration::from_millis(if i % 20 == 0 { 400 } else { 300 }));
        }
        assert_eq!(l.hedge_after(timeout), Duration::from_millis(800));
        // A fast partner: never sooner than 250 ms; a slow one: never later than half the timeout.
        let mut fast = Latencies::default();
        let mut slow = Latencies::default();
        for _ in 0..Latencies::KEEP + 10 {
            fast.record(Duration::from_millis(2));
            slow.record(Duration::from_secs(4));
        }
        assert_eq!(fast.recent.len(), Latencies::KEEP);
        assert_eq!(fast.hedge_after(timeout), Duration::from_millis(250));
        assert_eq!(slow.hedge_after(timeout), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
