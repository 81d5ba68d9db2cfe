"""The anchor of the Spark engine's benchmark: play-counts' day, written directly in PySpark (the
DataFrame API, over Spark Connect) the way a Spark team would write it, on the same cluster as our
binary's `--engine spark`. It computes what our binary asks the cluster for (the per-song and
per-artist counts, the top 200 of the global chart and of each country's) and brings the results
to the client as Arrow, as ours does; it writes nothing.
    python pyspark_play_counts.py REMOTE PLAYS_PARTITION DATE [CAP]"""
import sys
from datetime import datetime, timedelta, timezone

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F


def main():
    remote, path, day = sys.argv[1:4]
    cap = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    spark = SparkSession.builder.remote(remote).getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    lo = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    hi = lo + timedelta(days=1)
    plays = spark.read.parquet(path).select("play_id", "user_id", "song_id", "artist_id", "played_at",
                                            "ms_played", "country")
    good = plays.dropna().where((F.col("ms_played") >= 0) & F.col("country").rlike("^[A-Z]{2}$"))
    day_plays = good.where((F.col("played_at") >= F.lit(lo)) & (F.col("played_at") < F.lit(hi)))
    first = Window.partitionBy("user_id", "play_id").orderBy("ms_played", "song_id", "country", "artist_id")
    once = day_plays.withColumn("n", F.row_number().over(first)).where("n = 1").drop("n")
    stream = (F.col("ms_played") >= 30000).cast("int")
    per_user_song = once.groupBy("user_id", "song_id").agg(
        F.min("artist_id").alias("artist_id"), F.count("*").alias("plays"), F.sum(stream).alias("streams"),
        F.sum("ms_played").alias("ms"))
    songs = per_user_song.groupBy("song_id").agg(
        F.min("artist_id").alias("artist_id"), F.sum("plays").alias("plays"), F.sum("streams").alias("streams"),
        F.sum((F.col("streams") > 0).cast("int")).alias("listeners"), F.sum("ms").alias("ms_played"),
        F.sum(F.least("streams", F.lit(cap))).alias("chart"))
    artists = per_user_song.groupBy("user_id", "artist_id").agg(
        F.sum("plays").alias("plays"), F.sum("streams").alias("streams"), F.sum("ms").alias("ms")) \
        .groupBy("artist_id").agg(F.sum("plays"), F.sum("streams"),
                                  F.sum((F.col("streams") > 0).cast("int")).alias("listeners"), F.sum("ms"))
    top = songs.where("chart > 0").orderBy(F.desc("chart"), F.desc("listeners"), "song_id", "artist_id").limit(200)
    per_country = once.where(F.col("ms_played") >= 30000).groupBy("user_id", "song_id", "country").agg(
        F.min("artist_id").alias("artist_id"), F.count("*").alias("s")) \
        .groupBy("country", "song_id").agg(F.min("artist_id").alias("artist_id"),
                                           F.sum(F.least("s", F.lit(cap))).alias("streams"),
                                           F.count("*").alias("listeners"))
    by_country = Window.partitionBy("country").orderBy(F.desc("streams"), F.desc("listeners"), "song_id", "artist_id")
    country_top = per_country.withColumn("r", F.row_number().over(by_country)).where(F.col("r") <= 200)
    rows = [df.toArrow().num_rows for df in (songs.orderBy("song_id"), artists.orderBy("artist_id"), top, country_top)]
    print(rows)


if __name__ == "__main__":
    main()
