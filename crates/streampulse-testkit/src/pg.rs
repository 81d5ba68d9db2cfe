//! A fresh PostgreSQL database per test, on the server `DATABASE_URL` points at (`make test`
//! sets it, starting a server with `scripts/postgres.sh` when needed). Outside CI a missing
//! `DATABASE_URL` skips the test with a note; with `CI` set it fails it: a service test never
//! passes by not running.

use sqlx::Connection;

pub struct TestDb {
    pub url: String,
    admin: String,
    name: String,
}

/// A new empty database, or `None` (and a note) when no server is configured outside CI.
pub async fn database(tag: &str) -> Option<TestDb> {
    let admin = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but DATABASE_URL is not: run the tests through `make test`, which starts PostgreSQL"
            );
            eprintln!("skipping: DATABASE_URL is not set (make test sets it)");
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("sp_test_{tag}_{}_{nanos}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at DATABASE_URL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    Some(TestDb {
        url: url.to_string(),
        admin,
        name,
    })
}

impl TestDb {
    pub async fn drop(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}
