-- The song catalog that metadata-sync keeps equal to the partner's (DATA.md `songs`), plus the
-- entity tag the partner gave each song, and the sync's cursor.
CREATE TABLE songs (
    song_id      BIGINT      PRIMARY KEY,
    title        TEXT        NOT NULL,
    artist_id    BIGINT      NOT NULL,
    artist_name  TEXT        NOT NULL,
    album_id     BIGINT      NOT NULL,
    label_id     BIGINT      NOT NULL,
    isrc         TEXT        NOT NULL,
    duration_ms  INTEGER     NOT NULL,
    release_date DATE        NOT NULL,
    genre        TEXT        NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    etag         TEXT        NOT NULL
);

CREATE INDEX songs_by_update ON songs (updated_at, song_id);

-- One row per source API: the last change-feed position whose songs are committed. It moves in
-- the same transaction as the songs, so it never runs ahead of the data.
CREATE TABLE sync_cursor (
    source     TEXT        PRIMARY KEY,
    updated_at TIMESTAMPTZ NOT NULL,
    song_id    BIGINT      NOT NULL
);
