#!/usr/bin/env python3
"""Loads dags/streampulse_daily.py with Airflow (from PyPI, scripts/airflow-env.sh) and checks:
no import errors, the expected tasks and graph, the commands rendered for a logical date, and the
exit-code policy (75 retried, 65 failed at once with the rejects path).

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

DAGS = pathlib.Path(__file__).resolve().parents[2] / "dags"
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def main():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag
    bag = DagBag(dag_folder=str(DAGS))
    check("the DAG folder imports without errors", not bag.import_errors, str(bag.import_errors))
    dag = bag.dags.get("streampulse_daily")
    check("streampulse_daily is defined", dag is not None)
    if dag is None:
        sys.exit(1)
    tasks = {t.task_id: t for t in dag.tasks}
    check("tasks", set(tasks) == {"metadata_sync", "play_counts", "recommend", "ab_analytics",
                                  "first_of_month", "revenue"}, str(sorted(tasks)))
    down = {t: sorted(tasks[t].downstream_task_ids) for t in tasks}
    check("metadata_sync heads the graph, before play_counts",
          down["metadata_sync"] == ["play_counts"] and not tasks["metadata_sync"].upstream_task_ids, str(down))
    # DockerOperator keeps private_environment in `_private_environment` (it is not a templated,
    # rendered field, which is the point: it never reaches the task log).
    private = getattr(tasks["metadata_sync"], "_private_environment", None) or {}
    check("the partner token and database URL stay out of the logged environment",
          "SP_API_TOKEN" in private and "SP_DATABASE_URL" in private
          and not any("TOKEN" in k or "DATABASE" in k for k in tasks["metadata_sync"].environment),
          str(sorted(private)))
    check("play_counts gates the others",
          down["play_counts"] == ["ab_analytics", "first_of_month", "recommend"], str(down))
    check("revenue runs only behind first_of_month", down["first_of_month"] == ["revenue"]
          and sorted(tasks["revenue"].upstream_task_ids) == ["first_of_month"])
    check("every pipeline writes its XCom summary",
          all(tasks[t].command[-1] == "--xcom" and tasks[t].retrieve_output_path == "/airflow/xcom/return.json"
              for t in ["metadata_sync", "play_counts", "recommend", "ab_analytics", "revenue"]))
    check("retries configured", all(tasks[t].retries == 3 for t in tasks))

    sys.path.insert(0, str(DAGS))
    import streampulse_daily as module
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.providers.docker.exceptions import DockerContainerFailedException

    def failing(code, logs):
        def execute(self, context):
            raise DockerContainerFailedException(f"Docker container failed: {{'StatusCode': {code}, 'Error': None}}",
                                                 logs=logs)
        return execute

    op = tasks["play_counts"]
    base = module.DockerOperator.execute
    try:
        module.DockerOperator.execute = failing(75, ["interrupted"])
        try:
            op.execute({})
            check("exit 75 is raised for Airflow to retry", False)
        except AirflowFailException:
            check("exit 75 is raised for Airflow to retry", False, "became a hard failure")
        except DockerContainerFailedException:
            check("exit 75 is raised for Airflow to retry", True)
        module.DockerOperator.execute = failing(65, [
            '{"level":"ERROR","message":"120 of 80000 input rows rejected; see s3://sp/rejects/play-counts/date=2026-11-26/rejects.jsonl"}'])
        try:
            op.execute({})
            check("exit 65 fails at once naming the rejects", False)
        except AirflowFailException as e:
            check("exit 65 fails at once naming the rejects",
                  "input rejected" in str(e) and "rejects/play-counts/date=2026-11-26/rejects.jsonl" in str(e), str(e))
    finally:
        module.DockerOperator.execute = base
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
