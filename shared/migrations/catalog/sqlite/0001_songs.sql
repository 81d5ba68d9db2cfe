-- The song catalog that metadata-sync keeps equal to the partner's (DATA.md `songs`), plus the
-- entity tag the partner gave each song, and the sync's cursor. Same tables as the PostgreSQL
-- migration; dates and timestamps are ISO-8601 text (how sqlx stores chrono types in SQLite).
CREATE TABLE songs (
    song_id      INTEGER PRIMARY KEY,
    title        TEXT    NOT NULL,
    artist_id    INTEGER NOT NULL,
    artist_name  TEXT    NOT NULL,
    album_id     INTEGER NOT NULL,
    label_id     INTEGER NOT NULL,
    isrc         TEXT    NOT NULL,
    duration_ms  INTEGER NOT NULL,
    release_date TEXT    NOT NULL,
    genre        TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    etag         TEXT    NOT NULL
) STRICT;

CREATE INDEX songs_by_update ON songs (updated_at, song_id);

CREATE TABLE sync_cursor (
    source     TEXT    PRIMARY KEY,
    updated_at TEXT    NOT NULL,
    song_id    INTEGER NOT NULL
) STRICT;
