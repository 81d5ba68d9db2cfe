# Multi-stage build: compile the workspace once, ship one slim image holding every pipeline binary.
#   docker build -t streampulse/pipelines .
#   docker run --rm -v $PWD/data:/data streampulse/pipelines play-counts --date 2026-11-26
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source-only change reuses the cached dependency layer.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY pipelines pipelines
# The catalog migrations and the topic definitions are compiled in (sqlx::migrate!, include_str!).
COPY shared shared
# rdkafka builds its vendored librdkafka 2.12 with the image's gcc, make and perl (Debian's
# librdkafka is too old to link against); zlib for its compression codecs; protoc for the Spark
# Connect client's generated protocol.
RUN apt-get update && apt-get install -y --no-install-recommends zlib1g-dev protobuf-compiler && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --workspace --exclude streampulse-fuzz --locked \
    && mkdir -p /out \
    && find target/dist -maxdepth 1 -type f -executable -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data streampulse \
    && mkdir -p /data /spill /airflow/xcom \
    && chown streampulse /data /spill /airflow/xcom
COPY --from=build /out/ /usr/local/bin/
COPY shared /usr/share/streampulse
USER streampulse
WORKDIR /data
# Containers log JSON; data and spill locations are volumes.
ENV LOG_FORMAT=json SP_DATA_ROOT=/data SP_SPILL_DIR=/spill
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["play-counts", "--help"]
