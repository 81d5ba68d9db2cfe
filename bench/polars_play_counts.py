"""The play-counts job in Polars (lazy, streaming engine): a second reference for the benchmark."""
import sys

import polars as pl

csv, day, out = sys.argv[1], sys.argv[2], sys.argv[3]
cap, size = 10, 200
lo = pl.lit(day).str.to_datetime("%Y-%m-%d", time_zone="UTC")
plays = (
    pl.scan_csv(csv, ignore_errors=True, schema_overrides={"user_id": pl.Int64, "song_id": pl.Int64,
                "artist_id": pl.Int64, "ms_played": pl.Int32, "country": pl.Utf8, "played_at": pl.Utf8})
    .select("user_id", "song_id", "artist_id", "ms_played", "country",
            pl.col("played_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_zone="UTC", strict=False))
    .drop_nulls()
    .filter((pl.col("played_at") >= lo) & (pl.col("played_at") < lo + pl.duration(days=1)))
    .with_columns((pl.col("ms_played") >= 30000).cast(pl.Int64).alias("is_stream"))
)
per_user = plays.group_by("country", "song_id", "artist_id", "user_id").agg(
    pl.len().alias("plays"), pl.col("is_stream").sum().alias("streams"), pl.col("ms_played").cast(pl.Int64).sum().alias("ms"))
per_user = per_user.collect(engine="streaming").lazy()
su = per_user.group_by("song_id", "artist_id", "user_id").agg(pl.col("plays", "streams", "ms").sum())
su.group_by("song_id", "artist_id").agg(
    pl.col("plays").sum(), pl.col("streams").sum(), (pl.col("streams") > 0).sum().alias("listeners"),
    pl.col("ms").sum().alias("ms_played")).sort("song_id").sink_parquet(f"{out}/songs.parquet")
per_user.group_by("artist_id", "user_id").agg(pl.col("plays", "streams", "ms").sum()).group_by("artist_id").agg(
    pl.col("plays").sum(), pl.col("streams").sum(), (pl.col("streams") > 0).sum().alias("listeners"),
    pl.col("ms").sum().alias("ms_played")).sort("artist_id").sink_parquet(f"{out}/artists.parquet")
capped = pl.min_horizontal(pl.col("streams"), pl.lit(cap))
g = su.group_by("song_id", "artist_id").agg(capped.sum().alias("st"), (pl.col("streams") > 0).sum().alias("li")) \
    .with_columns(pl.lit("global").alias("scope"))
c = per_user.group_by("country", "song_id", "artist_id").agg(capped.sum().alias("st"), (pl.col("streams") > 0).sum().alias("li")) \
    .rename({"country": "scope"})
pl.concat([g.select("scope", "song_id", "artist_id", "st", "li"), c.select("scope", "song_id", "artist_id", "st", "li")]) \
    .filter(pl.col("st") > 0).sort(["scope", "st", "li", "song_id"], descending=[False, True, True, False]) \
    .group_by("scope", maintain_order=True).head(size).sink_parquet(f"{out}/charts.parquet")
