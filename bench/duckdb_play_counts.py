"""The play-counts job in DuckDB: the reference the benchmark compares against. Same outputs
(song counts, artist counts, global and per-country charts with the per-user cap), same inputs,
same thread count, Parquet out."""
import sys

import duckdb

csv, day, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cap, size = 10, 200
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET TimeZone = 'UTC'")
con.execute(f"SET temp_directory = '{out}/.tmp'")
types = {"play_id": "BIGINT", "user_id": "BIGINT", "session_id": "VARCHAR", "song_id": "BIGINT",
         "artist_id": "BIGINT", "album_id": "BIGINT", "played_at": "TIMESTAMPTZ", "ms_played": "INTEGER",
         "track_ms": "INTEGER", "platform": "VARCHAR", "country": "VARCHAR", "source": "VARCHAR",
         "shuffle": "BOOLEAN", "offline": "BOOLEAN", "client_version": "VARCHAR"}
con.execute(f"""CREATE VIEW plays AS SELECT user_id u, song_id s, artist_id a, ms_played ms, country c
    FROM read_csv('{csv}', header=true, columns={types}, ignore_errors=true)
    WHERE played_at >= TIMESTAMPTZ '{day} 00:00:00+00' AND played_at < TIMESTAMPTZ '{day} 00:00:00+00' + INTERVAL 1 DAY""")
con.execute("CREATE TABLE per_user AS SELECT c, s, a, u, count(*) AS plays, "
            "count(*) FILTER (WHERE ms >= 30000) AS streams, sum(ms)::BIGINT AS ms FROM plays GROUP BY ALL")
con.execute(f"""COPY (SELECT s AS song_id, a AS artist_id, sum(plays) plays, sum(streams) streams,
    count(DISTINCT u) FILTER (WHERE streams > 0) listeners, sum(ms) ms_played FROM per_user GROUP BY s, a ORDER BY s)
    TO '{out}/songs.parquet' (FORMAT parquet)""")
con.execute(f"""COPY (SELECT a AS artist_id, sum(plays) plays, sum(streams) streams,
    count(DISTINCT u) FILTER (WHERE streams > 0) listeners, sum(ms) ms_played FROM per_user GROUP BY a ORDER BY a)
    TO '{out}/artists.parquet' (FORMAT parquet)""")
con.execute(f"""COPY (
    WITH su AS (SELECT s, a, u, sum(streams) n FROM per_user GROUP BY s, a, u),
    g AS (SELECT 'global' AS scope, s, a, sum(least(n, {cap})) AS st, count(*) FILTER (WHERE n > 0) AS li FROM su GROUP BY s, a),
    cc AS (SELECT c AS scope, s, a, sum(least(streams, {cap})) AS st, count(*) FILTER (WHERE streams > 0) AS li FROM per_user GROUP BY c, s, a),
    r AS (SELECT *, row_number() OVER (PARTITION BY scope ORDER BY st DESC, li DESC, s) AS rank
          FROM (SELECT * FROM g UNION ALL SELECT * FROM cc) WHERE st > 0)
    SELECT scope, rank, s AS song_id, a AS artist_id, st AS streams FROM r WHERE rank <= {size} ORDER BY scope, rank)
    TO '{out}/charts.parquet' (FORMAT parquet)""")
