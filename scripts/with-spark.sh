#!/usr/bin/env bash
# Runs a command with two Spark Connect servers on free ports of 127.0.0.1, exported to it as
#   SP_SAIL_REMOTE   Sail (pysail), a Spark Connect server written in Rust;
#   SP_SPARK_REMOTE_TEST  Apache Spark itself (pyspark from PyPI, on the machine's Java 17), with
#                    two executor processes (local-cluster[2,1,1024]) so plans really run
#                    distributed.
#   SP_SAIL_BIN      the sail command, for a test that starts (and stops) a server of its own;
#   SP_SPARK_CLIENT_PYTHON  a Python with the Spark Connect client, for reading through Spark;
#   SP_SPARK_HOME    the pyspark installation's Spark, for a test's own server (token checks).
# Each comes from its own virtual environment (scripts/python-env.sh, tests/spark/). Both stop
# when the command ends, whatever its outcome; the command's exit code is returned.
#   scripts/with-spark.sh CMD [ARGS...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sail_py="$(scripts/python-env.sh tests/spark/requirements-sail.txt sail)"
spark_py="$(scripts/python-env.sh tests/spark/requirements-spark.txt spark)"
spark_home="$("$spark_py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
logs="$(mktemp -d -t spark-servers.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # The executors of local-cluster are children of its workers: none outlives the suite.
  pkill -f "spark.connect.grpc.binding.port=$spark_port" 2>/dev/null || true
  rm -rf "$logs"
}
trap cleanup EXIT

sail_port="$(free_port)"
"$(dirname "$sail_py")/sail" spark server --ip 127.0.0.1 --port "$sail_port" >"$logs/sail.log" 2>&1 &
pids+=($!)

spark_port="$(free_port)"
# SPARK_LOCAL_IP: otherwise Spark binds its driver and workers to the machine's first interface.
SPARK_HOME="$spark_home" SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR="$logs" PYSPARK_PYTHON="$spark_py" \
  "$spark_home/bin/spark-submit" \
  --class org.apache.spark.sql.connect.service.SparkConnectServer \
  --name "streampulse tests" \
  --master 'local-cluster[2,1,1024]' \
  --driver-memory 1g \
  --conf spark.connect.grpc.binding.address=127.0.0.1 \
  --conf "spark.connect.grpc.binding.port=$spark_port" \
  --conf spark.sql.session.timeZone=UTC \
  --conf spark.ui.enabled=false \
  --conf spark.sql.shuffle.partitions=4 \
  spark-internal >"$logs/spark.log" 2>&1 &
pids+=($!)

wait_for() { # name port pid log seconds
  for _ in $(seq 1 $(( $5 * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
      echo "with-spark.sh: $1 on 127.0.0.1:$2" >&2
      return 0
    fi
    if ! kill -0 "$3" 2>/dev/null; then
      tail -40 "$4" >&2
      echo "with-spark.sh: $1 exited before it listened" >&2
      exit 69
    fi
    sleep 0.1
  done
  tail -40 "$4" >&2
  echo "with-spark.sh: $1 did not listen within $5 s" >&2
  exit 69
}
wait_for sail "$sail_port" "${pids[0]}" "$logs/sail.log" 30
wait_for spark "$spark_port" "${pids[1]}" "$logs/spark.log" 120

export SP_SAIL_REMOTE="sc://127.0.0.1:$sail_port"
# For a test that needs a server of its own (to stop it mid-job).
export SP_SAIL_BIN="$(dirname "$sail_py")/sail"
export SP_SPARK_REMOTE_TEST="sc://127.0.0.1:$spark_port"
# A Python with the Spark Connect client (pyspark-client, pandas, pyarrow), for tests that read
# through Spark as an analyst would.
export SP_SPARK_CLIENT_PYTHON="$sail_py"
# Spark's own installation, for a test that starts a server of its own (one that checks a token).
export SP_SPARK_HOME="$spark_home"
set +e
"$@"
code=$?
exit $code
