//! The HTTP surface: routes, and the partner-like behaviour every `/songs` request goes through
//! (token, rate limit, latency, faults).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};
use streampulse_core::rate::TokenBucket;
use streampulse_core::songs::{Change, ChangePage};
use streampulse_core::time::parse_api_timestamp;

use crate::catalog::{Catalog, FeedKey};
use crate::{Behaviour, RetryAfterFormat};

/// What the server did, for tests and benchmarks (`GET /stats`).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub not_modified: AtomicU64,
    pub rate_limited: AtomicU64,
    pub faults: AtomicU64,
    pub hung: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Body bytes of the answers past the limit and the faults (songs, feed pages, 304s, 404s):
    /// what a client reads in full, so a test can hold a client's count of bytes in to it.
    pub body_bytes: AtomicU64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub ok: u64,
    pub not_modified: u64,
    pub rate_limited: u64,
    pub faults: u64,
    pub hung: u64,
    pub unauthorized: u64,
    pub body_bytes: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            ok: get(&self.ok),
            not_modified: get(&self.not_modified),
            rate_limited: get(&self.rate_limited),
            faults: get(&self.faults),
            hung: get(&self.hung),
            unauthorized: get(&self.unauthorized),
            body_bytes: get(&self.body_bytes),
        }
    }
}

struct AppState {
    catalog: Catalog,
    behaviour: Behaviour,
    bucket: Option<TokenBucket>,
    rng: Mutex<Pcg64Mcg>,
    stats: Arc<Stats>,
}

type Shared = Arc<AppState>;

/// The application and its counters.
pub fn router(catalog: Catalog, behaviour: Behaviour) -> (Router, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let state = Arc::new(AppState {
        catalog,
        bucket: (behaviour.rate > 0.0).then(|| TokenBucket::new(behaviour.rate, behaviour.burst)),
        rng: Mutex::new(Pcg64Mcg::seed_from_u64(behaviour.seed)),
        behaviour,
        stats: stats.clone(),
    });
    let api = Router::new()
        .route("/songs", get(list_songs))
        .route("/songs/{id}", get(get_song))
        .route_layer(middleware::from_fn_with_state(state.clone(), partner))
        .route("/health", get(|| async { "ok" }))
        .route("/stats", get(stats_handler))
        .with_state(state);
    (api, stats)
}

async fn stats_handler(State(state): State<Shared>) -> Json<StatsSnapshot> {
    Json(state.stats.snapshot())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Token, rate limit, latency and injected faults, in the order a partner applies them.
async fn partner(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let stats = &state.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(token) = &state.behaviour.token {
        let expected = format!("Bearer {}", token.expose());
        let given = request.headers().get(header::AUTHORIZATION);
        if given.and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if let Some(bucket) = &state.bucket
        && let Err(wait) = bucket.try_take()
    {
        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let value = match state.behaviour.retry_after {
            RetryAfterFormat::Seconds => wait.as_secs().to_string(),
            RetryAfterFormat::HttpDate => httpdate::fmt_http_date(SystemTime::now() + wait),
        };
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let draw: f64 = state.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
    let b = &state.behaviour;
    if draw < b.timeout_rate {
        stats.hung.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(b.hang).await;
        return error(StatusCode::GATEWAY_TIMEOUT, "upstream timed out");
    }
    tokio::time::sleep(b.latency).await;
    if draw < b.timeout_rate + b.fault_rate {
        stats.faults.fetch_add(1, Ordering::Relaxed);
        // Alternate the two codes a flaky backend gives.
        let status = if draw < b.timeout_rate + b.fault_rate / 2.0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return error(status, "injected fault");
    }
    let response = next.run(request).await;
    // Our handlers answer with whole bodies (JSON or empty), whose size is known exactly.
    if let Some(n) = axum::body::HttpBody::size_hint(response.body()).exact() {
        stats.body_bytes.fetch_add(n, Ordering::Relaxed);
    }
    match response.status() {
        StatusCode::NOT_MODIFIED => stats.not_modified.fetch_add(1, Ordering::Relaxed),
        s if s.is_success() => stats.ok.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    response
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub updated_since: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

async fn list_songs(State(state): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    let since_ms = match q.updated_since.as_deref() {
        None | Some("") => i64::MIN,
        Some(s) => match parse_api_timestamp(s) {
            Ok(t) => t.timestamp_millis(),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("updated_since: {e}")),
        },
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => match FeedKey::decode(c) {
            Some(k) => Some(k),
            None => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
    };
    let limit = q.limit.unwrap_or(100).clamp(1, state.behaviour.max_page);
    let (songs, next) = state.catalog.page(since_ms, after, limit);
    Json(ChangePage {
        songs: songs
            .into_iter()
            .map(|s| Change {
                song_id: s.song_id,
                updated_at: s.updated_at,
            })
            .collect(),
        next_cursor: next.map(FeedKey::encode),
    })
    .into_response()
}

async fn get_song(
    State(state): State<Shared>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let Some((song, etag)) = state.catalog.get(id) else {
        return error(StatusCode::NOT_FOUND, &format!("no song {id}"));
    };
    let etag_value = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\""));
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    if matches {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, etag_value);
        return r;
    }
    let mut r = Json(song).into_response();
    r.headers_mut().insert(header::ETAG, etag_value);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0"),
    );
    r
}
