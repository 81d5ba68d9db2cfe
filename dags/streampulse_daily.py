"""StreamPulse's nightly batch: every pipeline as a container of the pipelines image, for the
DAG run's logical date `{{ ds }}`.

    metadata_sync ──► play_counts ──► recommend
                                  ├─► ab_analytics
                                  └─► first_of_month ──► revenue (the month that just ended)

metadata-sync goes first: it brings the catalog database up to date with the partner's metadata
API and writes the day's `songs` snapshot that play-counts, recommend and revenue join against.
play-counts comes next because it is the day's gate on the plays export: when it rejects the day
(exit 65), nothing downstream publishes results built on that data.

Secrets (the partner API token, the catalog database URL with its password) come from an Airflow
Variable and Connection into the container's private environment, which Airflow never logs or
shows: `streampulse_api_token` and the connection `streampulse_catalog`.

Exit codes (the pipelines' documented contract) decide what Airflow does:
  75 (temporary: I/O, memory budget, SIGTERM)  -> retried by Airflow;
  65 (input rejected)                          -> fails at once, the rejects file in the error;
  64, 70 and anything else                     -> fails at once (a bug or a bad invocation).
Each task returns the pipeline's XCom summary (`--xcom` writes /airflow/xcom/return.json).
"""
import re
from datetime import datetime, timedelta

from airflow.sdk.exceptions import AirflowFailException
from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG

IMAGE = "{{ var.value.get('streampulse_image', 'streampulse/pipelines:latest') }}"
TEMPORARY_FAILURE = 75
MEANING = {64: "invalid flags or configuration", 65: "input rejected", 69: "a service is unavailable",
           70: "internal error", 75: "temporary failure"}

ENVIRONMENT = {
    "SP_DATA_ROOT": "{{ var.value.get('streampulse_data_root', 's3://streampulse-data') }}",
    "SP_MEMORY_LIMIT": "{{ var.value.get('streampulse_memory_limit', '8GiB') }}",
    "LOG_FORMAT": "json",
}


def exit_code(error):
    """The container's exit code from the operator's error (it carries Docker's wait result)."""
    match = re.search(r"'StatusCode': (\d+)", str(error))
    return int(match.group(1)) if match else None


class PipelineOperator(DockerOperator):
    """Runs one pipeline container and maps its exit code to Airflow's retry semantics."""

    def __init__(self, *, command, environment=None, **kwargs):
        super().__init__(
            image=IMAGE,
            command=command + ["--xcom"],
            environment={**ENVIRONMENT, **(environment or {})},
            auto_remove="success",
            mount_tmp_dir=False,
            retrieve_output=True,
            retrieve_output_path="/airflow/xcom/return.json",
            **kwargs,
        )

    def execute(self, context):
        try:
            return super().execute(context)
        except DockerContainerFailedException as error:
            code = exit_code(error)
            if code == TEMPORARY_FAILURE:
                raise  # Airflow retries: the run published nothing, a rerun is safe
            logs = "\n".join(str(line) for line in (error.logs or []))
            rejects = sorted(set(re.findall(r"[\w:/.\-=]*rejects/[\w/.\-=]+\.jsonl", logs)))
            detail = f"; rejected rows in {', '.join(rejects)}" if rejects else ""
            raise AirflowFailException(
                f"{self.task_id} exited {code} ({MEANING.get(code, 'unknown')}){detail}") from error


with DAG(
    dag_id="streampulse_daily",
    description="StreamPulse nightly batch: counts, charts, recommendations, experiments, monthly revenue",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=10), "retry_exponential_backoff": True},
    tags=["streampulse"],
) as dag:
    metadata_sync = PipelineOperator(
        task_id="metadata_sync",
        command=["metadata-sync", "--date", "{{ ds }}"],
        environment={"SP_API_URL": "{{ var.value.get('streampulse_api_url', 'http://metadata-api:8080') }}"},
        private_environment={
            "SP_API_TOKEN": "{{ var.value.get('streampulse_api_token', '') }}",
            "SP_DATABASE_URL": "{{ conn.streampulse_catalog.get_uri() }}",
        },
    )
    play_counts = PipelineOperator(task_id="play_counts", command=["play-counts", "--date", "{{ ds }}"])
    recommend = PipelineOperator(task_id="recommend",
                                 command=["recommend", "--date", "{{ ds }}", "--exclude-days", "7"])
    ab_analytics = PipelineOperator(task_id="ab_analytics", command=["ab-analytics", "--date", "{{ ds }}"])
    first_of_month = ShortCircuitOperator(
        task_id="first_of_month",
        python_callable=lambda ds: ds.endswith("-01"),
        op_kwargs={"ds": "{{ ds }}"},
        ignore_downstream_trigger_rules=False,
    )
    revenue = PipelineOperator(
        task_id="revenue",
        command=["revenue", "--month", "{{ macros.ds_format(macros.ds_add(ds, -1), '%Y-%m-%d', '%Y-%m') }}"],
    )
    metadata_sync >> play_counts >> [recommend, ab_analytics, first_of_month]
    first_of_month >> revenue
