# StreamPulse pipelines. `make run` runs the main jobs on a generated demo day (no server needed);
# `make test` runs every test, starting what the tests need. See README.md.

# Builds live outside the clone, so CI reruns and fresh clones reuse them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/streampulse/target
BIN := $(CARGO_TARGET_DIR)/release
DATA ?= ./data
DEMO_DATE ?= 2026-11-26
# One profile for everything (tests included), so DataFusion is compiled once.
CARGO_FLAGS := --release --workspace --exclude streampulse-fuzz --locked
# The Spark Connect client's protocol crate compiles .proto files at build time: every cargo
# command below finds (or installs) protoc first.
export PROTOC ?= $(shell scripts/protoc.sh)

.PHONY: all build run fuzz test test-rust test-e2e test-dags test-compose bench bench-play-counts bench-ab bench-recommend bench-revenue bench-metadata-sync bench-play-ingest bench-spark lint fmt clean

all: build

build:
	cargo build $(CARGO_FLAGS)

run: build
	@if [ ! -f "$(DATA)/exports/plays-$(DEMO_DATE).csv" ]; then \
	  echo "== generating a demo day ($(DEMO_DATE)) under $(DATA)"; \
	  $(BIN)/datagen --date $(DEMO_DATE) --data-root $(DATA) --plays 200000 --users 20000 --songs 5000 \
	    --experiment-users 10000 --bad-rows 0.0005; \
	fi
	@if [ ! -d "$(DATA)/partner/songs/date=$(DEMO_DATE)" ]; then \
	  $(BIN)/datagen --date $(DEMO_DATE) --data-root $(DATA)/partner --songs 5000 --datasets songs; \
	fi
	@echo "== metadata-sync $(DEMO_DATE): the partner's catalog, from a local metadata-api (demo pace: 1,000 req/s)"
	scripts/with-metadata-api.sh $(BIN) $(DATA)/partner/songs/date=$(DEMO_DATE) --latency-ms 20 --rate 1000 --token demo-token -- \
	  $(BIN)/metadata-sync --date $(DEMO_DATE) --data-root $(DATA) --api-token demo-token --rate 900 --burst 20
	@echo "== play-counts $(DEMO_DATE)"
	$(BIN)/play-counts --date $(DEMO_DATE) --data-root $(DATA) --input $(DATA)/exports/plays-$(DEMO_DATE).csv
	@echo "== play-ingest: the same day as Kafka events (a local tansu broker) -> $(DATA)/streamed/plays/"
	scripts/with-broker.sh sh -c '$(BIN)/datagen --date $(DEMO_DATE) --data-root $(DATA)/streamed --plays 200000 --users 20000 \
	    --songs 5000 --bad-rows 0.0005 --datasets songs --to-kafka && \
	  $(BIN)/play-ingest --until-caught-up --date $(DEMO_DATE) --data-root $(DATA)/streamed'
	@echo "== ab-analytics $(DEMO_DATE)"
	$(BIN)/ab-analytics --date $(DEMO_DATE) --data-root $(DATA)
	@echo "== recommend $(DEMO_DATE)"
	$(BIN)/recommend --date $(DEMO_DATE) --data-root $(DATA)
	@echo "== revenue $$(echo $(DEMO_DATE) | cut -c1-7) (the month so far)"
	$(BIN)/revenue --month $$(echo $(DEMO_DATE) | cut -c1-7) --data-root $(DATA)
	@echo "== audit (capacity report from the run records)"
	$(BIN)/audit --data-root $(DATA)
	@echo
	@echo "Outputs under $(DATA):"
	@find $(DATA) \( -path '*date=$(DEMO_DATE)*' -o -path '*experiment=*' -o -path '*month=*' \) -type f | grep -v '/exports/' | sort | sed 's/^/  /'
	@echo "Run records: $(DATA)/runs/"

test: test-rust test-e2e test-dags test-compose

# PostgreSQL tests run against DATABASE_URL, or a server scripts/postgres.sh finds or starts; Kafka
# tests start their own tansu broker from the binary scripts/tansu.sh fetches (SP_TANSU_BIN).
test-rust:
	@export DATABASE_URL=$$(scripts/postgres.sh) && export SP_TANSU_BIN=$$(scripts/tansu.sh) && \
	if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run $(CARGO_FLAGS) --no-fail-fast; \
	else \
	  cargo test $(CARGO_FLAGS) --no-fail-fast; \
	fi

test-e2e: build
	@export DATABASE_URL=$$(scripts/postgres.sh) && export SP_TANSU_BIN=$$(scripts/tansu.sh) && PY=$$(scripts/python-env.sh) && $$PY tests/e2e/play_counts_vs_duckdb.py --bin-dir $(BIN) \
	  && scripts/with-broker.sh $$PY tests/e2e/kafka_path_vs_csv.py --bin-dir $(BIN) \
	  && scripts/with-broker.sh $$PY tests/e2e/ingest_codecs.py --bin-dir $(BIN) \
	  && $$PY tests/e2e/ab_vs_scipy.py --bin-dir $(BIN) \
	  && $$PY tests/e2e/recommend_vs_numpy.py --bin-dir $(BIN) \
	  && $$PY tests/e2e/revenue_vs_duckdb.py --bin-dir $(BIN) \
	  && $$PY tests/e2e/foreign_writers.py --bin-dir $(BIN) \
	  && $$PY tests/e2e/kill_during_publish.py --bin-dir $(BIN) \
	  && scripts/with-broker.sh $$PY tests/e2e/object_store_root.py --bin-dir $(BIN) \
	  && $$PY tests/e2e/audit_calibrate.py --bin-dir $(BIN) \
	  && $$PY tests/e2e/logs_and_progress.py --bin-dir $(BIN) \
	  && DPY=$$(scripts/python-env.sh tests/requirements-delta.txt delta) \
	  && scripts/with-spark.sh sh -c "$$PY tests/e2e/readers_open_outputs.py --bin-dir $(BIN) \
	       && $$PY tests/e2e/spark_engine.py --bin-dir $(BIN) \
	       && $$DPY tests/e2e/delta_tables.py --bin-dir $(BIN)"

# The compose file, rendered and checked by docker-compose (Debian's client; no engine needed).
test-compose:
	scripts/check-compose.sh

# The Airflow DAG, loaded by Airflow itself (its own virtual environment: scripts/airflow-env.sh).
test-dags:
	@PY=$$(scripts/airflow-env.sh) && $$PY tests/dags/test_streampulse_daily.py

bench: bench-play-counts bench-ab bench-recommend bench-revenue bench-metadata-sync bench-play-ingest bench-spark

bench-play-counts: build
	bench/play_counts.sh

bench-ab: build
	bench/ab_analytics.sh

bench-recommend: build
	bench/recommend.sh

bench-revenue: build
	bench/revenue.sh

bench-spark: build
	bench/spark_engine.sh

bench-metadata-sync: build
	bench/metadata_sync.sh

bench-play-ingest: build
	bench/play_ingest.sh

# Every fuzz target for FUZZ_SECONDS (default 60) each; not part of `make test` (see fuzz/).
fuzz:
	scripts/fuzz.sh

# The lint covers fuzz/ too: it is compiled there, though only `make fuzz` links it.
# cargo-machete finds dependencies no crate uses (each one costs build minutes); make installs it
# on first use. check-links.sh: the stages without Kafka or SQL do not build librdkafka or sqlx.
lint:
	cargo fmt --all --check
	@command -v cargo-machete >/dev/null 2>&1 || CARGO_TARGET_DIR=$(HOME)/.cache/streampulse/tools-target cargo install --locked --quiet cargo-machete@0.9.2
	cargo machete
	scripts/check-links.sh
	cargo clippy --release --workspace --locked --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	rm -rf $(DATA)
