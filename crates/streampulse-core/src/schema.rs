//! Arrow schemas of every dataset in the data contract (docs/data.md). Stages build and check
//! their batches against these, so a column renamed in one place fails loudly everywhere.
//!
//! These are the columns *in the files*. A partitioned dataset's partition column (`date`,
//! `month`, `experiment`) lives in the directory name only, as the Hive convention Spark follows
//! has it: a reader of the dataset directory (DuckDB's `hive_partitioning`, pyarrow and pandas
//! datasets, Polars, Spark) adds it from the path, and a file that also held it would make pandas
//! and pyarrow refuse to merge the two.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Width of user features and song embeddings.
pub const EMBEDDING_DIM: i32 = 200;

/// Money: exact decimal, 18 digits with 6 after the point.
pub const MONEY: DataType = DataType::Decimal128(18, 6);

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn f(name: &str, dt: DataType, nullable: bool) -> Field {
    Field::new(name, dt, nullable)
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

fn embedding(name: &str) -> Field {
    f(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            EMBEDDING_DIM,
        ),
        false,
    )
}

/// Column names of the plays export, in file order.
pub const PLAYS_COLUMNS: [&str; 15] = [
    "play_id",
    "user_id",
    "session_id",
    "song_id",
    "artist_id",
    "album_id",
    "played_at",
    "ms_played",
    "track_ms",
    "platform",
    "country",
    "source",
    "shuffle",
    "offline",
    "client_version",
];

/// A rule of the data contract on a column's values beyond their type. Every reader applies
/// them (the CSV decoder, [`crate::conform::validate`] for Parquet): a row that breaks one is
/// rejected with the rule as its reason, never counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Durations: `ms_played`, `track_ms`, `duration_ms`.
    NonNegative,
    /// `country`: an ISO 3166-1 alpha-2 code, two capital letters.
    CountryCode,
}

impl Rule {
    /// The rule of a contract column, by name (the same name means the same thing in every
    /// dataset of the contract).
    pub fn of(column: &str) -> Option<Rule> {
        match column {
            "ms_played" | "track_ms" | "duration_ms" => Some(Rule::NonNegative),
            "country" => Some(Rule::CountryCode),
            _ => None,
        }
    }

    /// Why an integer breaks the rule, if it does.
    pub fn check_int(self, v: i64) -> Option<&'static str> {
        match self {
            Rule::NonNegative if v < 0 => Some("negative duration"),
            _ => None,
        }
    }

    /// Why a string breaks the rule, if it does.
    pub fn check_str(self, s: &[u8]) -> Option<&'static str> {
        match self {
            Rule::CountryCode if !(s.len() == 2 && s.iter().all(u8::is_ascii_uppercase)) => {
                Some("not an ISO 3166 alpha-2 country code (two capital letters)")
            }
            _ => None,
        }
    }
}

impl Rule {
    /// The rule as a SQL predicate, true where a value of `column` breaks it (and null where
    /// the value is null: nulls are the contract's nullability, checked apart), for an engine
    /// that runs our SQL (Spark). The same bytes pass as [`Rule::check_str`] lets pass: one
    /// character between A and Z is one byte.
    pub fn sql_violation(self, column: &str) -> String {
        match self {
            Rule::NonNegative => format!("{column} < 0"),
            Rule::CountryCode => format!(
                "NOT (length({column}) = 2 AND substr({column}, 1, 1) BETWEEN 'A' AND 'Z' \
                 AND substr({column}, 2, 1) BETWEEN 'A' AND 'Z')"
            ),
        }
    }
}

/// The 30-second rule: a play counts as a stream from this many milliseconds on.
pub const STREAM_MIN_MS: i32 = 30_000;

pub static PLAYS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("play_id", Int64, false),
        f("user_id", Int64, false),
        f("session_id", Utf8, false),
        f("song_id", Int64, false),
        f("artist_id", Int64, false),
        f("album_id", Int64, false),
        f("played_at", ts_ms(), false),
        f("ms_played", Int32, false),
        f("track_ms", Int32, false),
        f("platform", Utf8, false),
        f("country", Utf8, false),
        f("source", Utf8, false),
        f("shuffle", Boolean, false),
        f("offline", Boolean, false),
        f("client_version", Utf8, false),
    ])
});

pub static SONGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("song_id", Int64, false),
        f("title", Utf8, false),
        f("artist_id", Int64, false),
        f("artist_name", Utf8, false),
        f("album_id", Int64, false),
        f("label_id", Int64, false),
        f("isrc", Utf8, false),
        f("duration_ms", Int32, false),
        f("release_date", Date32, false),
        f("genre", Utf8, false),
        f("updated_at", ts_ms(), false),
    ])
});

pub static USER_FEATURES: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        f("user_id", DataType::Int64, false),
        embedding("features"),
    ])
});

pub static SONG_EMBEDDINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        f("song_id", DataType::Int64, false),
        embedding("embedding"),
    ])
});

pub static SUBSCRIPTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("subscription_id", Int64, false),
        f("user_id", Int64, false),
        f("plan", Utf8, false),
        f("country", Utf8, false),
        f("currency", Utf8, false),
        f("monthly_price", MONEY, false),
        f("started_at", Date32, false),
        f("ended_at", Date32, true),
    ])
});

pub static EXPERIMENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("experiment_id", Utf8, false),
        f("variant", Utf8, false),
        f("weight", Float64, false),
        f("is_control", Boolean, false),
        f("started_at", Date32, false),
        f("ended_at", Date32, false),
    ])
});

pub static ASSIGNMENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("experiment_id", Utf8, false),
        f("user_id", Int64, false),
        f("variant", Utf8, false),
        f("assigned_at", ts_ms(), false),
    ])
});

pub static USER_METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("experiment_id", Utf8, false),
        f("user_id", Int64, false),
        f("minutes_listened", Float64, false),
        f("sessions", Int32, false),
        f("converted", Boolean, false),
        f("retained_d7", Boolean, false),
        f("pre_minutes_listened", Float64, false),
    ])
});

pub static DAILY_SONG_COUNTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("song_id", Int64, false),
        f("artist_id", Int64, false),
        f("plays", Int64, false),
        f("streams", Int64, false),
        f("listeners", Int64, false),
        f("ms_played", Int64, false),
    ])
});

pub static DAILY_ARTIST_COUNTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("artist_id", Int64, false),
        f("plays", Int64, false),
        f("streams", Int64, false),
        f("listeners", Int64, false),
        f("ms_played", Int64, false),
    ])
});

pub static CHARTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("scope", Utf8, false),
        f("rank", Int32, false),
        f("song_id", Int64, false),
        f("artist_id", Int64, false),
        f("streams", Int64, false),
        f("prev_rank", Int32, true),
        f("movement", Int32, true),
        f("peak_rank", Int32, false),
        f("days_on_chart", Int32, false),
        f("is_new", Boolean, false),
        f("is_reentry", Boolean, false),
    ])
});

pub static RECOMMENDATIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("user_id", Int64, false),
        f("rank", Int32, false),
        f("song_id", Int64, false),
        f("score", Float32, false),
    ])
});

fn revenue_by(key: &str) -> SchemaRef {
    use DataType::*;
    schema(vec![
        f("country", Utf8, false),
        f("currency", Utf8, false),
        f(key, Int64, false),
        f("streams", Int64, false),
        f("amount", MONEY, false),
    ])
}

pub static REVENUE_BY_SONG: LazyLock<SchemaRef> = LazyLock::new(|| revenue_by("song_id"));
pub static REVENUE_BY_ARTIST: LazyLock<SchemaRef> = LazyLock::new(|| revenue_by("artist_id"));
pub static REVENUE_BY_LABEL: LazyLock<SchemaRef> = LazyLock::new(|| revenue_by("label_id"));

pub static REVENUE_RECONCILIATION: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    schema(vec![
        f("country", Utf8, false),
        f("currency", Utf8, false),
        f("pool", MONEY, false),
        f("attributed", MONEY, false),
        f("unattributed", MONEY, false),
        f("difference", MONEY, false),
    ])
});

pub static AB_RESULTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    let mut fields = vec![
        f("experiment_id", Utf8, false),
        f("metric", Utf8, false),
        f("variant", Utf8, false),
    ];
    fields.push(f("n_control", Int64, false));
    fields.push(f("n_treatment", Int64, false));
    for name in [
        "control_mean",
        "treatment_mean",
        "diff",
        "diff_ci_low",
        "diff_ci_high",
        "rel_lift",
        "rel_ci_low",
        "rel_ci_high",
        "p_value",
        "p_holm",
        "p_bh",
    ] {
        fields.push(f(name, Float64, true));
    }
    fields.push(f("cuped", Boolean, false));
    fields.push(f("srm_p_value", Float64, true));
    schema(fields)
});

/// Every dataset by its directory name under the data root.
pub fn dataset(name: &str) -> Option<SchemaRef> {
    Some(match name {
        "plays" => PLAYS.clone(),
        "songs" => SONGS.clone(),
        "user_features" => USER_FEATURES.clone(),
        "song_embeddings" => SONG_EMBEDDINGS.clone(),
        "subscriptions" => SUBSCRIPTIONS.clone(),
        "experiments" => EXPERIMENTS.clone(),
        "assignments" => ASSIGNMENTS.clone(),
        "user_metrics" => USER_METRICS.clone(),
        "daily_song_counts" => DAILY_SONG_COUNTS.clone(),
        "daily_artist_counts" => DAILY_ARTIST_COUNTS.clone(),
        "charts" => CHARTS.clone(),
        "recommendations" => RECOMMENDATIONS.clone(),
        "revenue_by_song" => REVENUE_BY_SONG.clone(),
        "revenue_by_artist" => REVENUE_BY_ARTIST.clone(),
        "revenue_by_label" => REVENUE_BY_LABEL.clone(),
        "revenue_reconciliation" => REVENUE_RECONCILIATION.clone(),
        "ab_results" => AB_RESULTS.clone(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_columns_match_the_schema_order() {
        let names: Vec<_> = PLAYS.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, PLAYS_COLUMNS);
    }

    #[test]
    fn ab_results_has_the_contract_columns() {
        assert_eq!(AB_RESULTS.fields().len(), 18);
        assert_eq!(dataset("charts").unwrap().fields().len(), 11);
        assert!(dataset("nope").is_none());
    }
}
