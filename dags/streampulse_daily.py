"""StreamPulse's nightly batch: every pipeline as a container of the pipelines image, for the
DAG run's logical date `{{ ds }}`.

    metadata_sync ───────────────────► play_counts ──► recommend[0..N-1] ◄── recommend_shards ─┐
    plays_from_kafka ──► play_ingest ──┘             ├─► ab_analytics ─────────────────────────┼─► vacuum
                                                     └─► first_of_month ──► revenue ───────────┘

metadata-sync brings the catalog database up to date with the partner's metadata API and writes
the day's `songs` snapshot that play-counts, recommend and revenue join against. play-counts
comes next because it is the day's gate on the plays: when it rejects the day (exit 65), nothing
downstream publishes results built on that data. When the Variable `streampulse_plays_source` is
"kafka", play_ingest (`play-ingest --until-caught-up`) first writes the day's `plays` partition
from the Kafka topic; otherwise (the default, "export": the partner's CSV export)
plays_from_kafka skips it, and play_counts (trigger rule none_failed) runs without it.
recommend fans out over `streampulse_recommend_shards` shards (default 1): recommend_shards
builds the N commands (`--shard I/N`) at run time, and the mapped task runs one container each.
On the first of a month, revenue runs for the month that just ended.

The datasets' table format is the Variable `streampulse_table_format` ("parquet", the default,
or "delta": every dataset a Delta Lake table, each partition replaced in one commit, which is
what readers of an s3:// root should get). Last, whatever became of the day's tasks (trigger
rule all_done), vacuum deletes the files of the root's Delta tables that no version younger
than `streampulse_vacuum_retention_hours` (default 168, Delta's 7 days) needs; on a root
without Delta tables it finds nothing to do.

One definition, two runtimes, chosen when the file is parsed by the Variable
`streampulse_operator`:
  "kubernetes" (default, production): KubernetesPodOperator. Memory request and limit are the
      run's budget (`streampulse_memory_limit`) plus headroom, an emptyDir at /spill
      (SP_SPILL_DIR), the image's non-root uid 10001, a SIGTERM grace period, the secrets from
      the Kubernetes Secret `streampulse-pipelines` (keys `api-token`, `database-url`), and the
      XCom sidecar reading /airflow/xcom/return.json.
  "docker" (local): DockerOperator on the local Docker daemon; the secrets come from the Airflow
      Variable `streampulse_api_token` and the Connection `streampulse_catalog`, rendered at run
      time and registered with Airflow's secrets masker (never logged or shown unmasked), and the
      JSON XCom file is read through the provider's own copy-from-container code.
The engine of play_counts and revenue, read when the file is parsed from the Variable
`streampulse_engine`:
  "embedded" (default): the aggregations run inside the container.
  "spark": they run on a Spark cluster through Spark Connect (`--engine spark`): the remote
      (`sc://HOST:PORT/;token=...`, a secret) comes from the Kubernetes Secret's key
      `spark-remote` (kubernetes) or the Variable `streampulse_spark_remote` (docker, masked), and
      the Variable `streampulse_spark_path_prefix` (such as `s3://=s3a://`), when set, maps the
      data root's paths to the cluster's names for them. The cluster must reach the data root.
Other Variables: `streampulse_image`, `streampulse_data_root`, `streampulse_memory_limit`,
`streampulse_api_url`, `streampulse_kafka_brokers`, `streampulse_namespace`,
`streampulse_cpus` (Kubernetes: CPU request and SP_THREADS).

Exit codes (the pipelines' documented contract) decide what Airflow does, the same for both
runtimes:
  75 (temporary: I/O, memory budget, SIGTERM) -> retried (3 retries, exponential backoff from
                                                 10 minutes, doubling, at most 2 hours);
  69 (a service is unavailable)               -> retried the same way;
  66 (input missing: an upstream partition or export has not arrived yet)
                                              -> retried after INPUT_MISSING_RETRY_DELAY (60 min)
                                                 each time, waiting for upstream (the task's
                                                 retry_policy, Airflow 3.3);
  65 (input rejected: bad rows)               -> fails at once, the rejects file in the error;
  64, 70 and anything else                    -> fails at once (a bug or a bad invocation).
A container that never reached an exit code (image pull, scheduling, eviction before start) gets
Airflow's ordinary retries. Each task returns the pipeline's XCom summary (`--xcom` writes the
JSON object /airflow/xcom/return.json).
"""
import json
import re
from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, ExceptionRetryPolicy, RetryAction, RetryRule, Variable, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.sdk.log import mask_secret
from kubernetes.client import models as k8s

IMAGE = "{{ var.value.get('streampulse_image', 'streampulse/pipelines:latest') }}"
XCOM_PATH = "/airflow/xcom/return.json"
SPILL_DIR = "/spill"
UID = 10001  # the image's `streampulse` user (Dockerfile)
TERMINATION_GRACE_SECONDS = 120  # SIGTERM -> the run removes its staged outputs and exits 75
K8S_SECRET = "streampulse-pipelines"

INPUT_REJECTED = 65
INPUT_MISSING = 66
RETRIED = {69, 75}
INPUT_MISSING_RETRY_DELAY = timedelta(hours=1)
MEANING = {64: "invalid flags or configuration", 65: "input rejected", 66: "input missing",
           69: "a service is unavailable", 70: "internal error", 75: "temporary failure",
           137: "killed: out of memory or past the SIGTERM grace period"}

ENVIRONMENT = {
    "SP_DATA_ROOT": "{{ var.value.get('streampulse_data_root', 's3://streampulse-data') }}",
    "SP_MEMORY_LIMIT": "{{ var.value.get('streampulse_memory_limit', '8GiB') }}",
    "SP_TABLE_FORMAT": "{{ var.value.get('streampulse_table_format', 'parquet') }}",
    "LOG_FORMAT": "json",
}

# The secrets a task may ask for, by environment variable: on Docker, an Airflow template
# rendered at run time and masked; on Kubernetes, the key in the Secret K8S_SECRET (the kubelet
# puts it in the environment: Airflow never sees the value).
SECRETS = {
    "SP_API_TOKEN": ("{{ var.value.get('streampulse_api_token', '') }}", "api-token"),
    "SP_DATABASE_URL": ("{{ conn.streampulse_catalog.get_uri() }}", "database-url"),
    "SP_SPARK_REMOTE": ("{{ var.value.get('streampulse_spark_remote', '') }}", "spark-remote"),
}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def byte_size(text):
    """Bytes in `512MiB`, `2GiB`, `1.5GB`, `300000`: the pipelines' --memory-limit syntax."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 512MiB or 2GiB)")
    return round(float(match.group(1)) * _UNITS[match.group(2).lower()])


def pod_memory(budget):
    """The pod's memory request and limit for a run budget: the budget plus a quarter, at least
    512 MiB more (the process outside the budget: binary, allocator, buffers; measured ~150 MB
    above the pool), as a Kubernetes quantity in Mi. A Jinja filter of the DAG."""
    size = byte_size(budget)
    return f"{-(-(size + max(size // 4, 512 * 2**20)) // 2**20)}Mi"


def docker_exit_code(error):
    """The container's exit code from DockerOperator's error (it carries Docker's wait result)."""
    match = re.search(r"'StatusCode': (\d+)", str(error))
    return int(match.group(1)) if match else None


def terminated_state(pod, container):
    """The `terminated` state of `container` in a pod read from the API (the way the cncf-kubernetes
    provider itself reads the exit code: status.container_statuses[].state.terminated), or None."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    status = next((s for s in statuses if s.name == container), None)
    return status.state.terminated if status is not None and status.state else None


class PipelineRetry(AirflowException):
    """Exit 75 or 69: Airflow retries (exponential backoff from the task's retry_delay)."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class InputMissing(PipelineRetry):
    """Exit 66: an input partition has not arrived yet; retried after INPUT_MISSING_RETRY_DELAY."""


# Airflow 3.3's retry policies: evaluated in the worker on the exception, they may override the
# retry delay (still within the task's `retries`). Only 66 needs it; 75 and 69 take the default.
RETRY_POLICY = ExceptionRetryPolicy(rules=[RetryRule(
    exception=InputMissing, action=RetryAction.RETRY, retry_delay=INPUT_MISSING_RETRY_DELAY,
    reason="input missing (exit 66): waiting for the upstream partition or export")])


def raise_for_exit_code(task_id, code, logs, error):
    """Raise what Airflow must do for a pipeline container that exited with `code`."""
    what = f"{task_id} exited {code} ({MEANING.get(code, 'unknown exit code')})"
    if code == INPUT_MISSING:
        minutes = int(INPUT_MISSING_RETRY_DELAY.total_seconds() // 60)
        raise InputMissing(f"{what}: an upstream input has not arrived yet; retried after {minutes} min "
                           f"while tries remain (the run published nothing)", code) from error
    if code in RETRIED:
        raise PipelineRetry(f"{what}: retried with backoff while tries remain (the run published nothing)",
                            code) from error
    if code == INPUT_REJECTED:
        rejects = sorted(set(re.findall(r"[\w:/.\-=]*rejects/[\w/.\-=]+\.jsonl", logs or "")))
        detail = f"; rejected rows in {', '.join(rejects)}" if rejects else ""
        raise AirflowFailException(f"{what}{detail}") from error
    raise AirflowFailException(f"{what}: not retried") from error


class DockerPipelineOperator(DockerOperator):
    """One pipeline container on the local Docker daemon."""

    # DockerOperator decodes the file it copies out of the container (`get_archive`, a tar) with
    # `getattr(self, "pickling_library", pickle).load(file)`; our binaries write JSON there (the
    # KubernetesPodOperator convention), so only that decoding step changes.
    pickling_library = json

    def __init__(self, *, command, environment=None, secret_env=(), **kwargs):
        # Not setdefault: a mapped task's partial() passes retry_policy=None explicitly.
        kwargs["retry_policy"] = kwargs.get("retry_policy") or RETRY_POLICY
        super().__init__(
            image=IMAGE,
            command=[*command, "--xcom"],
            environment={**ENVIRONMENT, **(environment or {})},
            private_environment={name: SECRETS[name][0] for name in secret_env},
            auto_remove="success",
            mount_tmp_dir=False,
            retrieve_output=True,
            retrieve_output_path=XCOM_PATH,
            **kwargs,
        )

    def _do_render_template_fields(self, parent, template_fields, context, jinja_env, seen_oids):
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        # `private_environment` is not a template field of DockerOperator (so its templates
        # would reach the container verbatim), and must not become one: template fields are
        # stored and shown as the task's "Rendered Template". So it is rendered here, beside the
        # template fields (this hook also runs for mapped tasks, as KubernetesPodOperator's does),
        # and every rendered value is registered with Airflow's secrets masker (mask_secret, which
        # tells the supervisor too), so that any log line or error carrying one shows `***`. The
        # Connection's password and a Variable with a sensitive name are masked by Airflow when
        # read; this also masks the whole URI and any value whatever its name.
        if parent is self and self._private_environment:
            rendered = self.render_template(self._private_environment, context, jinja_env, seen_oids)
            for value in rendered.values():
                mask_secret(value)
            self._private_environment = rendered

    def execute(self, context):
        try:
            return super().execute(context)
        except DockerContainerFailedException as error:
            code = docker_exit_code(error)
            if code is None:
                raise
            raise_for_exit_code(self.task_id, code, "\n".join(str(line) for line in (error.logs or [])), error)


class KubernetesPipelineOperator(KubernetesPodOperator):
    """One pipeline pod in the Airflow deployment's Kubernetes cluster."""

    def __init__(self, *, command, environment=None, secret_env=(), **kwargs):
        # Not setdefault: a mapped task's partial() passes retry_policy=None explicitly.
        kwargs["retry_policy"] = kwargs.get("retry_policy") or RETRY_POLICY
        memory = "{{ var.value.get('streampulse_memory_limit', '8GiB') | pod_memory }}"
        cpus = "{{ var.value.get('streampulse_cpus', '2') }}"
        super().__init__(
            image=IMAGE,
            # The image's entrypoint (tini) stays; the pipeline and its flags are the arguments.
            arguments=[*command, "--xcom"],
            # The pod's CPU request is also the run's thread count (the node's cores are not ours).
            env_vars={**ENVIRONMENT, "SP_SPILL_DIR": SPILL_DIR, "SP_THREADS": cpus, **(environment or {})},
            secrets=[Secret("env", name, K8S_SECRET, SECRETS[name][1]) for name in secret_env],
            namespace="{{ var.value.get('streampulse_namespace', 'streampulse') }}",
            labels={"app.kubernetes.io/name": "streampulse", "streampulse/pipeline": command[0]},
            container_resources=k8s.V1ResourceRequirements(
                requests={"memory": memory, "cpu": cpus},
                limits={"memory": memory},
            ),
            volumes=[k8s.V1Volume(name="spill", empty_dir=k8s.V1EmptyDirVolumeSource())],
            volume_mounts=[k8s.V1VolumeMount(name="spill", mount_path=SPILL_DIR)],
            security_context=k8s.V1PodSecurityContext(
                run_as_user=UID, run_as_non_root=True, fs_group=UID,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
            container_security_context=k8s.V1SecurityContext(
                allow_privilege_escalation=False, capabilities=k8s.V1Capabilities(drop=["ALL"])),
            termination_grace_period=TERMINATION_GRACE_SECONDS,
            # On a failure the container's last log lines become its termination message (the
            # rejects path of an exit 65 is among them).
            termination_message_policy="FallbackToLogsOnError",
            do_xcom_push=True,
            log_events_on_failure=True,
            **kwargs,
        )

    def cleanup(self, pod, remote_pod, xcom_result=None, context=None):
        # The provider reports a failed pod from here (sync and deferrable runs alike) as an
        # AirflowException "Pod ... returned a failure"; the exit code is in the pod's status.
        try:
            super().cleanup(pod, remote_pod, xcom_result, context)
        except (AirflowFailException, AirflowSkipException):
            raise
        except AirflowException as error:
            terminated = terminated_state(remote_pod, self.base_container_name)
            if terminated is None or terminated.exit_code is None:
                raise
            raise_for_exit_code(self.task_id, terminated.exit_code, terminated.message, error)


OPERATORS = {"docker": DockerPipelineOperator, "kubernetes": KubernetesPipelineOperator}
# Read when the file is parsed (one Variable read per parse); an unknown value is an import error.
OPERATOR_KIND = Variable.get("streampulse_operator", default="kubernetes")
if OPERATOR_KIND not in OPERATORS:
    raise ValueError(f"Variable streampulse_operator={OPERATOR_KIND!r}: expected one of {sorted(OPERATORS)}")
Pipeline = OPERATORS[OPERATOR_KIND]


def engine_settings():
    """play_counts' and revenue's engine flags and secrets, from the Variables read at parse time (the remote,
    a secret, is only ever a secret reference here)."""
    engine = Variable.get("streampulse_engine", default="embedded")
    if engine == "embedded":
        return {}
    if engine != "spark":
        raise ValueError(f"Variable streampulse_engine={engine!r}: expected 'embedded' or 'spark'")
    environment = {"SP_ENGINE": "spark"}
    prefix = Variable.get("streampulse_spark_path_prefix", default="")
    if prefix:
        environment["SP_SPARK_PATH_PREFIX"] = prefix
    return {"environment": environment, "secret_env": ["SP_SPARK_REMOTE"]}


ENGINE = engine_settings()


@task
def recommend_shards(ds=None):
    """recommend's commands, one per shard: mapped arguments are not templated, so the logical
    date and the shard count (Variable `streampulse_recommend_shards`) are read here."""
    shards = int(Variable.get("streampulse_recommend_shards", default="1"))
    if shards < 1:
        raise AirflowFailException(f"streampulse_recommend_shards={shards}: need at least 1")
    return [["recommend", "--date", ds, "--exclude-days", "7", "--shard", f"{i}/{shards}"]
            for i in range(shards)]


with DAG(
    dag_id="streampulse_daily",
    description="StreamPulse nightly batch: counts, charts, recommendations, experiments, monthly revenue",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    # Airflow 3: retry_exponential_backoff is the multiplier (True would be 1: a constant delay).
    default_args={"retries": 3, "retry_delay": timedelta(minutes=10), "retry_exponential_backoff": 2.0,
                  "max_retry_delay": timedelta(hours=2)},
    user_defined_filters={"pod_memory": pod_memory},
    tags=["streampulse"],
) as dag:
    metadata_sync = Pipeline(
        task_id="metadata_sync",
        command=["metadata-sync", "--date", "{{ ds }}"],
        environment={"SP_API_URL": "{{ var.value.get('streampulse_api_url', 'http://metadata-api:8080') }}"},
        secret_env=["SP_API_TOKEN", "SP_DATABASE_URL"],
    )
    plays_from_kafka = ShortCircuitOperator(
        task_id="plays_from_kafka",
        python_callable=lambda source: source == "kafka",
        op_kwargs={"source": "{{ var.value.get('streampulse_plays_source', 'export') }}"},
        ignore_downstream_trigger_rules=False,  # skips play_ingest only
    )
    play_ingest = Pipeline(
        task_id="play_ingest",
        command=["play-ingest", "--until-caught-up", "--date", "{{ ds }}"],
        environment={"SP_KAFKA_BROKERS": "{{ var.value.get('streampulse_kafka_brokers', 'kafka:9092') }}"},
    )
    play_counts = Pipeline(task_id="play_counts", command=["play-counts", "--date", "{{ ds }}"],
                           trigger_rule="none_failed", **ENGINE)
    recommend = Pipeline.partial(task_id="recommend").expand(command=recommend_shards())
    ab_analytics = Pipeline(task_id="ab_analytics", command=["ab-analytics", "--date", "{{ ds }}"])
    first_of_month = ShortCircuitOperator(
        task_id="first_of_month",
        python_callable=lambda ds: ds.endswith("-01"),
        op_kwargs={"ds": "{{ ds }}"},
        ignore_downstream_trigger_rules=False,
    )
    revenue = Pipeline(
        task_id="revenue",
        command=["revenue", "--month", "{{ macros.ds_format(macros.ds_add(ds, -1), '%Y-%m-%d', '%Y-%m') }}"],
        **ENGINE,
    )
    vacuum = Pipeline(
        task_id="vacuum",
        command=["vacuum", "--retention-hours", "{{ var.value.get('streampulse_vacuum_retention_hours', '168') }}"],
        trigger_rule="all_done",
    )
    plays_from_kafka >> play_ingest >> play_counts
    metadata_sync >> play_counts >> [recommend, ab_analytics, first_of_month]
    first_of_month >> revenue
    [recommend, ab_analytics, revenue] >> vacuum
