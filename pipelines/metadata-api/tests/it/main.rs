//! The metadata API over real HTTP: paging, ETags, the token, the rate limit and faults.

use std::time::Duration;

use metadata_api::routes::StatsSnapshot;
use metadata_api::{Behaviour, RetryAfterFormat, serve};
use reqwest::StatusCode;
use streampulse_core::songs::ChangePage;
use streampulse_core::songs::{self, SongRecord};
use streampulse_testkit::catalog::Catalog;

fn catalog(n: usize) -> Vec<SongRecord> {
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    Catalog::generate(9, n, date)
        .batches(1000)
        .iter()
        .flat_map(|b| songs::from_batch(b, "generated").unwrap())
        .collect()
}

async fn start(songs: Vec<SongRecord>, behaviour: Behaviour) -> metadata_api::Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(listener, songs, behaviour, std::future::pending()).unwrap()
}

fn quick() -> Behaviour {
    Behaviour {
        latency: Duration::ZERO,
        rate: 0.0,
        token: Some("tok".parse().unwrap()),
        ..Behaviour::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn the_feed_pages_through_every_song_in_update_order() {
    let songs = catalog(250);
    let server = start(songs.clone(), quick()).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/songs?limit=100&cursor={c}", server.url),
            None => format!("{}/songs?limit=100", server.url),
        };
        let page: ChangePage = client()
            .get(url)
            .bearer_auth("tok")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page.songs.len() <= 100);
        seen.extend(page.songs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    assert!(
        seen.windows(2)
            .all(|w| (w[0].updated_at, w[0].song_id) < (w[1].updated_at, w[1].song_id))
    );

    // updated_since is inclusive and filters.
    let mid = seen[200].updated_at;
    let since = mid.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let page: ChangePage = client()
        .get(format!(
            "{}/songs?updated_since={since}&limit=1000",
            server.url
        ))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page.songs.len(), 50);
    assert_eq!(page.next_cursor, None);

    let bad = client()
        .get(format!("{}/songs?updated_since=yesterday", server.url))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn songs_carry_an_etag_and_if_none_match_gives_304() {
    let songs = catalog(10);
    let server = start(songs.clone(), quick()).await;
    let url = format!("{}/songs/{}", server.url, songs[3].song_id);
    let r = client().get(&url).bearer_auth("tok").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, songs[3].etag());
    assert_eq!(r.json::<SongRecord>().await.unwrap(), songs[3]);
    let r = client()
        .get(&url)
        .bearer_auth("tok")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = client()
        .get(&url)
        .bearer_auth("tok")
        .header("If-None-Match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let missing = client()
        .get(format!("{}/songs/999999", server.url))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bearer_token_is_required_but_not_for_health() {
    let server = start(catalog(5), quick()).await;
    let r = client()
        .get(format!("{}/songs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = client()
        .get(format!("{}/songs", server.url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .get(format!("{}/health", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn over_the_rate_it_answers_429_with_retry_after() {
    for (format, check) in [
        (
            RetryAfterFormat::Seconds,
            (|v: &str| v.parse::<u64>().is_ok()) as fn(&str) -> bool,
        ),
        (RetryAfterFormat::HttpDate, |v: &str| {
            httpdate::parse_http_date(v).is_ok()
        }),
    ] {
        let server = start(
            catalog(5),
            Behaviour {
                rate: 5.0,
                burst: 5.0,
                retry_after: format,
                ..quick()
            },
        )
        .await;
        let mut limited = 0;
        for _ in 0..12 {
            let r = client()
                .get(format!("{}/songs", server.url))
                .bearer_auth("tok")
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                limited += 1;
                let v = r.headers()["retry-after"].to_str().unwrap();
                assert!(check(v), "{format:?}: {v}");
            }
        }
        assert!(
            (6..=7).contains(&limited),
            "{format:?}: {limited} of 12 limited"
        );
        let stats: StatsSnapshot = client()
            .get(format!("{}/stats", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats.rate_limited, limited);
    }
}

#[tokio::test]
async fn a_share_of_requests_fails_with_500_or_503() {
    let server = start(
        catalog(5),
        Behaviour {
            fault_rate: 0.3,
            ..quick()
        },
    )
    .await;
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..400 {
        let r = client()
            .get(format!("{}/songs", server.url))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        *codes.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    let failed = codes.get(&500).copied().unwrap_or(0) + codes.get(&503).copied().unwrap_or(0);
    assert!((80..=160).contains(&failed), "{codes:?}");
    assert!(
        codes.contains_key(&500) && codes.contains_key(&503),
        "{codes:?}"
    );
}

#[tokio::test]
async fn hanging_requests_outlast_a_client_timeout() {
    let server = start(
        catalog(5),
        Behaviour {
            timeout_rate: 1.0,
            hang: Duration::from_secs(5),
            ..quick()
        },
    )
    .await;
    let r = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .get(format!("{}/songs", server.url))
        .bearer_auth("tok")
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        std::path::Path::new(env!("CARGO_BIN_EXE_metadata-api")),
        &[("SP_API_TOKEN", "tok-3f9a1c-never-printed")],
    );
}
