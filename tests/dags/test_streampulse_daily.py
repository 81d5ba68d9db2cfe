#!/usr/bin/env python3
"""Loads dags/streampulse_daily.py with Airflow (from PyPI, scripts/airflow-env.sh) and checks:

- the DAG imports for both operator kinds (Variable `streampulse_operator`: kubernetes, docker)
  with one graph, and an unknown kind is an import error;
- a real run of each kind (`dag.test()` on the test's sqlite database: the scheduler loop, the
  in-process execution API, a real DagRun context, templates rendered by the task runner, XComs
  and rendered fields stored), stubbed only at the network edge: Docker's API client (the object
  with images/create_container/attach/wait/get_archive), and the Kubernetes call that would
  create the pod (the pod request is built by the provider from the rendered task instead);
  * Docker, plays from Kafka, 3 recommend shards, the first of a month: the commands, the
    catalog URI and token rendered into metadata-sync's container environment, masked in the
    task log (Airflow's own task-log processors) and absent from the stored rendered fields,
    the JSON return.json decoded by the provider's copy-from-container path into XComs;
  * Kubernetes, defaults: play_ingest skipped, one recommend shard, the pods' resources, spill
    emptyDir, uid, grace period, secrets from secretKeyRef, XCom sidecar; the provider's own
    XCom retrieval (its exec into the sidecar, `cat /airflow/xcom/return.json`, then the kill),
    stubbed at kubernetes.stream.stream, gives our return.json as the task's XCom;
- the exit-code policy for both kinds (Docker: a container that exits N; Kubernetes: a pod whose
  status, kubernetes client model objects, says the base container terminated with N) and the
  retry policy for 66;
- deploy/recommend-indexed-job.yaml parses, and matches the Kubernetes API's Job model.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import inspect
import io
import json
import os
import pathlib
import shutil
import signal
import sys
import tarfile
import tempfile
import traceback
import types
from datetime import datetime, timedelta, timezone

ROOT = pathlib.Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
HOME = tempfile.mkdtemp(prefix="airflow-home-")
os.environ["AIRFLOW_HOME"] = HOME  # never a real Airflow home: the test creates its database
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)  # dag.test() syncs this bundle to the DB
CATALOG_URI = "postgresql://sp_sync:Catal0g-Passw0rd@catalog-db.internal:5432/catalog"
API_TOKEN = "sp-partner-token-4f9a2c71e8"
os.environ["AIRFLOW_CONN_STREAMPULSE_CATALOG"] = CATALOG_URI
os.environ["AIRFLOW_VAR_STREAMPULSE_API_TOKEN"] = API_TOKEN
for name in ["STREAMPULSE_OPERATOR", "STREAMPULSE_PLAYS_SOURCE", "STREAMPULSE_RECOMMEND_SHARDS",
             "STREAMPULSE_MEMORY_LIMIT", "STREAMPULSE_TABLE_FORMAT", "STREAMPULSE_VACUUM_RETENTION_HOURS"]:
    os.environ.pop(f"AIRFLOW_VAR_{name}", None)

PIPELINES = ["metadata_sync", "play_ingest", "play_counts", "recommend", "ab_analytics", "revenue", "vacuum"]
TASKS = {*PIPELINES, "plays_from_kafka", "recommend_shards", "first_of_month"}
REJECTS = "s3://sp/rejects/play-counts/date=2026-11-26/rejects.jsonl"
REJECT_LOG = f'{{"level":"ERROR","message":"120 of 80000 input rows rejected; see {REJECTS}"}}'
TIME_LIMIT_S = 600
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + str(detail) if detail and not ok else ''}", flush=True)


def load(kind=None):
    """The DAG folder parsed by Airflow with Variable streampulse_operator=kind (unset: default)."""
    from airflow.dag_processing.dagbag import DagBag
    if kind is None:
        os.environ.pop("AIRFLOW_VAR_STREAMPULSE_OPERATOR", None)
    else:
        os.environ["AIRFLOW_VAR_STREAMPULSE_OPERATOR"] = kind
    return DagBag(dag_folder=str(DAGS))


def variables(**values):
    for key, value in values.items():
        name = f"AIRFLOW_VAR_{key.upper()}"
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)


def module_of(task):
    """The DAG module (its globals) a task's operator class was defined in."""
    cls = task.operator_class if task.is_mapped else type(task)
    return types.SimpleNamespace(**inspect.unwrap(cls.__init__).__globals__)


def failure(check_name, fn, expect, *needles):
    """Runs fn(); passes when it raises exactly `expect` (a class) with every needle in its text."""
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the type is the check
        ok = type(error) is expect and all(n in str(error) for n in needles)
        check(check_name, ok, f"{type(error).__name__}: {error}")
        return error
    check(check_name, False, "did not raise")
    return None


# -- the network edges -----------------------------------------------------------------------

def tar_of(name, data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fake_docker_client_class():
    """docker.APIClient with its network calls replaced: a daemon whose containers log a line,
    exit with `exit_code` and leave /airflow/xcom/return.json holding a JSON summary."""
    import docker

    class FakeDocker(docker.APIClient):
        exit_code = 0
        log_lines = []
        containers = []  # the create_container calls, in order

        def _retrieve_server_version(self):
            return "1.45"

        def ping(self):
            return True

        def images(self, name=None, **kwargs):
            return [{"Id": "sha256:streampulse"}]

        def create_container(self, **kwargs):
            FakeDocker.containers.append(kwargs)
            return {"Id": f"container-{len(FakeDocker.containers)}"}

        def _spec(self, container):
            return FakeDocker.containers[int(container.rsplit("-", 1)[1]) - 1]

        def attach(self, container, **kwargs):
            env = self._spec(container)["environment"]
            lines = list(FakeDocker.log_lines)
            if "SP_DATABASE_URL" in env:  # a careless pipeline echoing its secrets
                lines.append(f"connecting to {env['SP_DATABASE_URL']} with token {env['SP_API_TOKEN']}")
            return iter([line.encode() for line in lines])

        def start(self, container, **kwargs):
            pass

        def wait(self, container, **kwargs):
            return {"StatusCode": FakeDocker.exit_code, "Error": None}

        def get_archive(self, container, path, **kwargs):
            command = self._spec(container)["command"]
            data = json.dumps({"pipeline": command[0], "args": command[1:], "rows_out": 1234}).encode()
            return iter([tar_of(os.path.basename(path), data)]), {"name": os.path.basename(path),
                                                                  "size": len(data)}

        def remove_container(self, container, **kwargs):
            pass

    return FakeDocker


class FakeCoreV1:
    """The kubernetes CoreV1Api calls KubernetesPodOperator.cleanup makes, for one pod."""

    def __init__(self, pod):
        self.pod = pod
        self.calls = []

    def read_namespaced_pod(self, name, namespace, **kwargs):
        self.calls.append(("read", name))
        return self.pod

    def list_namespaced_event(self, namespace, **kwargs):
        from kubernetes.client import models as k8s
        return k8s.CoreV1EventList(items=[])

    def patch_namespaced_pod(self, name, namespace, body, **kwargs):
        self.calls.append(("patch", name))

    def delete_namespaced_pod(self, name, namespace, body=None, **kwargs):
        self.calls.append(("delete", name))

    def connect_get_namespaced_pod_exec(self, *args, **kwargs):
        raise AssertionError("an exec goes through kubernetes.stream.stream, stubbed where it is used")


def pod_with_status(exit_code=None, message=None, waiting=None):
    from kubernetes.client import models as k8s
    state = (k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
        exit_code=exit_code, reason="Completed" if exit_code == 0 else "Error", message=message))
        if exit_code is not None else k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason=waiting)))
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="play-counts-x1y2", namespace="streampulse", annotations={}, labels={}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base"), k8s.V1Container(name="airflow-xcom-sidecar")]),
        status=k8s.V1PodStatus(
            phase="Succeeded" if exit_code == 0 else ("Pending" if exit_code is None else "Failed"),
            container_statuses=[k8s.V1ContainerStatus(
                name="base", image="streampulse/pipelines:latest", image_id="", ready=False,
                restart_count=0, state=state)]))


# -- a run -----------------------------------------------------------------------------------

def run_dag(dag, logical_date):
    """dag.test() for one logical date: returns the DagRun, its task instances by (task, index),
    the stored rendered fields and XComs."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    # No retries in the test: a failing task must fail the run now, not wait 10 minutes.
    retries = {t.task_id: t.retries for t in dag.tasks}
    for t in dag.tasks:
        t.retries = 0
    try:
        run = dag.test(logical_date=logical_date)
    finally:
        for t in dag.tasks:
            t.retries = retries[t.task_id]
    with create_session() as session:
        tis = {(ti.task_id, ti.map_index): ti for ti in run.get_task_instances(session=session)}
        rendered = {(r.task_id, r.map_index): r.rendered_fields for r in session.scalars(
            select(RenderedTaskInstanceFields).where(RenderedTaskInstanceFields.run_id == run.run_id))}
        xcoms = {(x.task_id, x.map_index): XComModel.deserialize_value(x) for x in session.scalars(
            select(XComModel).where(XComModel.run_id == run.run_id, XComModel.key == "return_value"))}
    return run, tis, rendered, xcoms


def main():
    import airflow.sdk.log as sdk_log
    from airflow.utils import db

    # Task logs as Airflow writes a task's log file (its JSON processors, secrets masking
    # included), into a file read back below.
    log_path = pathlib.Path(HOME) / "task-logs.jsonl"
    log_file = open(log_path, "wb")
    sdk_log.configure_logging(json_output=True, output=log_file)
    db.initdb()

    # -- parsing: both kinds, one definition -----------------------------------------------
    bag = load()
    check("the DAG folder imports without errors (default: kubernetes)", not bag.import_errors,
          str(bag.import_errors))
    dag = bag.dags.get("streampulse_daily")
    check("streampulse_daily is defined", dag is not None)
    docker_bag = load("docker")
    check("the DAG folder imports without errors (docker)", not docker_bag.import_errors,
          str(docker_bag.import_errors))
    docker_dag = docker_bag.dags.get("streampulse_daily")
    if dag is None or docker_dag is None:
        print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
        sys.exit(1)
    bad = load("nomad")
    check("an unknown streampulse_operator is an import error",
          bad.import_errors and "streampulse_operator" in str(bad.import_errors), str(bad.import_errors))
    variables(streampulse_operator=None)

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.sdk import RetryAction
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    tasks = {t.task_id: t for t in dag.tasks}
    docker_tasks = {t.task_id: t for t in docker_dag.tasks}
    # Each parse made its own module: the classes of a kind are the ones its tasks were made with.
    module = module_of(tasks["play_counts"])
    docker_module = module_of(docker_tasks["play_counts"])
    check("tasks", set(tasks) == TASKS, str(sorted(tasks)))
    down = {t: sorted(tasks[t].downstream_task_ids) for t in tasks}
    check("one graph for both kinds",
          down == {t: sorted(docker_tasks[t].downstream_task_ids) for t in docker_tasks}, str(down))
    check("kubernetes by default: every pipeline a KubernetesPodOperator",
          all(issubclass(tasks[t].operator_class if t == "recommend" else type(tasks[t]), KubernetesPodOperator)
              for t in PIPELINES))
    check("docker: every pipeline a DockerOperator",
          all(issubclass(docker_tasks[t].operator_class if t == "recommend" else type(docker_tasks[t]), DockerOperator)
              for t in PIPELINES))
    check("metadata_sync heads the graph, before play_counts",
          down["metadata_sync"] == ["play_counts"] and not tasks["metadata_sync"].upstream_task_ids, str(down))
    check("play_ingest runs behind plays_from_kafka, before play_counts",
          down["plays_from_kafka"] == ["play_ingest"] and down["play_ingest"] == ["play_counts"], str(down))
    check("play_counts runs when play_ingest is skipped (trigger rule none_failed)",
          tasks["play_counts"].trigger_rule == "none_failed")
    check("play_counts gates the others",
          down["play_counts"] == ["ab_analytics", "first_of_month", "recommend"], str(down))
    check("recommend is mapped over recommend_shards' commands",
          tasks["recommend"].is_mapped
          and sorted(tasks["recommend"].upstream_task_ids) == ["play_counts", "recommend_shards"],
          str(sorted(tasks["recommend"].upstream_task_ids)))
    check("vacuum runs last, behind recommend, ab_analytics and revenue, whatever became of them",
          sorted(tasks["vacuum"].upstream_task_ids) == ["ab_analytics", "recommend", "revenue"]
          and not down["vacuum"] and tasks["vacuum"].trigger_rule == "all_done", str(down))
    check("revenue runs only behind first_of_month", down["first_of_month"] == ["revenue"]
          and sorted(tasks["revenue"].upstream_task_ids) == ["first_of_month"])
    ops = {t: tasks[t].unmap({"command": ["recommend"]}) if tasks[t].is_mapped else tasks[t] for t in tasks}
    check("retries: 3, exponential backoff (multiplier 2.0) from 10 minutes, at most 2 hours",
          all(op.retries == 3 and op.retry_exponential_backoff == 2.0 and op.retry_delay == timedelta(minutes=10)
              and op.max_retry_delay == timedelta(hours=2) for op in ops.values()))
    private = getattr(docker_tasks["metadata_sync"], "_private_environment", None) or {}
    check("docker: the partner token and database URL stay out of the logged environment",
          set(private) == {"SP_API_TOKEN", "SP_DATABASE_URL"}
          and not any("TOKEN" in k or "DATABASE" in k for k in docker_tasks["metadata_sync"].environment)
          and "private_environment" not in docker_tasks["metadata_sync"].template_fields, str(sorted(private)))
    check("every pipeline writes its XCom summary (docker: return.json read as JSON; kubernetes: the sidecar)",
          all(docker_tasks[t].command[-1] == "--xcom" and docker_tasks[t].retrieve_output
              and docker_tasks[t].retrieve_output_path == "/airflow/xcom/return.json"
              and tasks[t].arguments[-1] == "--xcom" and tasks[t].do_xcom_push
              for t in PIPELINES if t != "recommend")
          and getattr(type(docker_tasks["play_counts"]), "pickling_library", None) is json)
    check("pod memory: the budget plus a quarter, at least 512 MiB more",
          [module.pod_memory(b) for b in ["8GiB", "2GiB", "256MiB", "1.5GB"]]
          == ["10240Mi", "2560Mi", "768Mi", "1943Mi"],
          [module.pod_memory(b) for b in ["8GiB", "2GiB", "256MiB", "1.5GB"]])

    # -- the engine of play_counts: Variables read at parse time ------------------------------
    def k8s_env(task):
        # A dict until the operator renders it into V1EnvVar objects.
        env = task.env_vars or {}
        return dict(env) if isinstance(env, dict) else {e.name: e.value for e in env}

    def k8s_secrets(task):
        return {(sec.deploy_target, sec.key) for sec in (task.secrets or [])}

    check("embedded by default: play_counts gets no engine flag and no Spark secret",
          "SP_ENGINE" not in k8s_env(tasks["play_counts"])
          and ("SP_SPARK_REMOTE", "spark-remote") not in k8s_secrets(tasks["play_counts"])
          and "SP_SPARK_REMOTE" not in (getattr(docker_tasks["play_counts"], "_private_environment", None) or {}))
    variables(streampulse_engine="spark", streampulse_spark_path_prefix="s3://=s3a://")
    spark_bag, spark_docker_bag = load(), load("docker")
    variables(streampulse_engine="mapreduce")
    bad_engine = load()
    variables(streampulse_engine=None, streampulse_spark_path_prefix=None)
    check("streampulse_engine=spark imports for both kinds",
          not spark_bag.import_errors and not spark_docker_bag.import_errors,
          str(spark_bag.import_errors or spark_docker_bag.import_errors))
    check("an unknown streampulse_engine is an import error",
          bad_engine.import_errors and "streampulse_engine" in str(bad_engine.import_errors),
          str(bad_engine.import_errors))
    if not spark_bag.import_errors and not spark_docker_bag.import_errors:
        spark_tasks = {t.task_id: t for t in spark_bag.dags["streampulse_daily"].tasks}
        spark_docker = {t.task_id: t for t in spark_docker_bag.dags["streampulse_daily"].tasks}
        env = k8s_env(spark_tasks["play_counts"])
        revenue_env = k8s_env(spark_tasks["revenue"])
        check("kubernetes, spark: play_counts and revenue run --engine spark with the path mapping",
              env.get("SP_ENGINE") == "spark" and env.get("SP_SPARK_PATH_PREFIX") == "s3://=s3a://"
              and revenue_env.get("SP_ENGINE") == "spark"
              and ("SP_SPARK_REMOTE", "spark-remote") in k8s_secrets(spark_tasks["revenue"]), str(env))
        check("kubernetes, spark: the remote (it holds the token) comes from the Secret's key spark-remote",
              ("SP_SPARK_REMOTE", "spark-remote") in k8s_secrets(spark_tasks["play_counts"])
              and "SP_SPARK_REMOTE" not in env, str(k8s_secrets(spark_tasks["play_counts"])))
        private = getattr(spark_docker["play_counts"], "_private_environment", None) or {}
        check("docker, spark: the remote is a private (masked) environment variable from a Variable",
              "streampulse_spark_remote" in private.get("SP_SPARK_REMOTE", "")
              and spark_docker["play_counts"].environment.get("SP_ENGINE") == "spark"
              and "SP_SPARK_REMOTE" not in spark_docker["play_counts"].environment, str(private))
        others = [t for t in PIPELINES if t not in ("play_counts", "revenue")]
        check("spark: no other task gets the engine or the Spark secret",
              all("SP_ENGINE" not in k8s_env(spark_tasks[t].unmap({"command": ["recommend"]})
                                             if spark_tasks[t].is_mapped else spark_tasks[t])
                  for t in others)
              and all(("SP_SPARK_REMOTE", "spark-remote") not in k8s_secrets(
                  spark_tasks[t].unmap({"command": ["recommend"]}) if spark_tasks[t].is_mapped else spark_tasks[t])
                  for t in others))

    # -- a Docker run: kafka plays, 3 shards, the first of December ------------------------
    from airflow.providers.docker.hooks import docker as docker_hook
    from airflow.sdk.log import redact
    FakeDocker = fake_docker_client_class()
    real_client = docker_hook.APIClient
    docker_hook.APIClient = FakeDocker
    variables(streampulse_operator="docker", streampulse_plays_source="kafka", streampulse_recommend_shards=3,
              streampulse_table_format="delta")
    log_file.flush()
    log_start = log_path.stat().st_size
    try:
        run, tis, rendered, xcoms = run_dag(docker_dag, datetime(2026, 12, 1, tzinfo=timezone.utc))
    finally:
        docker_hook.APIClient = real_client
        variables(streampulse_operator=None, streampulse_plays_source=None, streampulse_recommend_shards=None,
                  streampulse_table_format=None)
    log_file.flush()
    task_log = log_path.read_bytes()[log_start:].decode(errors="replace")
    states = {k: str(ti.state) for k, ti in tis.items()}
    check("docker run (kafka, 3 shards, 2026-12-01) succeeds, every task ran",
          str(run.state) == "success" and all(s == "success" for s in states.values())
          and len(states) == len(TASKS) + 2, str(states))
    check("play_ingest ran before play_counts",
          tis[("play_ingest", -1)].end_date <= tis[("play_counts", -1)].start_date)
    commands = [c["command"] for c in FakeDocker.containers]
    by_pipeline = {c[0]: c for c in commands}
    check("docker: the commands rendered for the logical date",
          by_pipeline.get("metadata-sync") == ["metadata-sync", "--date", "2026-12-01", "--xcom"]
          and by_pipeline.get("play-ingest") == ["play-ingest", "--until-caught-up", "--date", "2026-12-01", "--xcom"]
          and by_pipeline.get("revenue") == ["revenue", "--month", "2026-11", "--xcom"]
          and by_pipeline.get("vacuum") == ["vacuum", "--retention-hours", "168", "--xcom"], str(commands))
    check("docker, streampulse_table_format=delta: every container gets SP_TABLE_FORMAT=delta",
          len(FakeDocker.containers) >= 8
          and all(c["environment"].get("SP_TABLE_FORMAT") == "delta" for c in FakeDocker.containers),
          str([c["environment"].get("SP_TABLE_FORMAT") for c in FakeDocker.containers]))
    expected_shards = [["recommend", "--date", "2026-12-01", "--exclude-days", "7", "--shard", f"{i}/3"]
                       for i in range(3)]
    check("recommend_shards returns the 3 shard commands", xcoms.get(("recommend_shards", -1)) == expected_shards,
          xcoms.get(("recommend_shards", -1)))
    check("recommend expanded to 3 mapped containers, one per shard",
          sorted(c for c in commands if c[0] == "recommend") == [c + ["--xcom"] for c in expected_shards]
          and sorted(i for t, i in tis if t == "recommend") == [0, 1, 2], str(commands))
    from airflow.sdk import Connection
    uri = Connection.from_uri(CATALOG_URI, conn_id="streampulse_catalog").get_uri()
    env = next((c["environment"] for c in FakeDocker.containers if c["command"][0] == "metadata-sync"), {})
    check("metadata-sync's container gets the rendered connection URI and token",
          env.get("SP_DATABASE_URL") == uri and "Catal0g-Passw0rd@catalog-db.internal:5432/catalog" in uri
          and env.get("SP_API_TOKEN") == API_TOKEN, f"{env.get('SP_DATABASE_URL')!r} vs {uri!r}")
    check("no other container gets a secret",
          all("SP_DATABASE_URL" not in c["environment"] and "SP_API_TOKEN" not in c["environment"]
              for c in FakeDocker.containers if c["command"][0] != "metadata-sync"))
    check("the secrets masker redacts the URI and the token", redact(uri) == "***" and redact(API_TOKEN) == "***",
          f"{redact(uri)} {redact(API_TOKEN)}")
    echoed = [line for line in task_log.splitlines() if "connecting to" in line]
    check("the task log masks a container line echoing the secrets",
          len(echoed) == 1 and "connecting to *** with token ***" in echoed[0]
          and "Catal0g" not in task_log and "catalog-db.internal" not in task_log and API_TOKEN not in task_log,
          echoed or log_path)
    stored = json.dumps(rendered.get(("metadata_sync", -1)))
    check("metadata_sync's stored rendered fields (the UI's Rendered Template) hold no secret",
          ("metadata_sync", -1) in rendered and "Catal0g" not in stored and API_TOKEN not in stored
          and "2026-12-01" in stored, stored)
    check("templated fields rendered with the run's context (ShortCircuit arguments)",
          rendered.get(("plays_from_kafka", -1), {}).get("op_kwargs") == {"source": "kafka"}
          and rendered.get(("first_of_month", -1), {}).get("op_kwargs") == {"ds": "2026-12-01"},
          {k: v.get("op_kwargs") for k, v in rendered.items() if "op_kwargs" in v})
    check("docker: the JSON return.json comes back as the task's XCom (the provider's get_archive path)",
          xcoms.get(("play_counts", -1)) == {"pipeline": "play-counts", "args": ["--date", "2026-12-01", "--xcom"],
                                              "rows_out": 1234}, xcoms.get(("play_counts", -1)))
    shard_xcoms = [(xcoms.get(("recommend", i)) or {}).get("args") for i in range(3)]
    check("docker: each recommend shard's XCom (map index I scored shard I/3)",
          shard_xcoms == [c[1:] + ["--xcom"] for c in expected_shards], shard_xcoms)

    # -- a Kubernetes run: defaults (export plays, 1 shard), not the first of a month -------
    pods = {}

    def execute_sync(self, context):
        # Where the provider would create the pod: build its request from the rendered task.
        pods[(self.task_id, context["ti"].map_index)] = self.build_pod_request_obj(context, dry_run=True)
        return {"pipeline": self.arguments[0]}

    real_execute_sync = KubernetesPodOperator.execute_sync
    KubernetesPodOperator.execute_sync = execute_sync
    try:
        run, tis, rendered, xcoms = run_dag(dag, datetime(2026, 11, 26, tzinfo=timezone.utc))
    finally:
        KubernetesPodOperator.execute_sync = real_execute_sync
    states = {k: str(ti.state) for k, ti in tis.items()}
    check("kubernetes run (defaults, 2026-11-26) succeeds",
          str(run.state) == "success" and states.get(("play_counts", -1)) == "success", str(states))
    check("play_ingest skipped when plays come from the export, play_counts still ran",
          states.get(("play_ingest", -1)) == "skipped" and states.get(("plays_from_kafka", -1)) == "success",
          str(states))
    check("revenue skipped on a day other than the first", states.get(("revenue", -1)) == "skipped", str(states))
    check("recommend: one shard by default (--shard 0/1)",
          xcoms.get(("recommend_shards", -1)) == [["recommend", "--date", "2026-11-26", "--exclude-days", "7",
                                                   "--shard", "0/1"]]
          and sorted(k for k in pods if k[0] == "recommend") == [("recommend", 0)], str(sorted(pods)))
    check("a pod for every pipeline that ran, vacuum last though revenue was skipped",
          sorted(pods) == [("ab_analytics", -1), ("metadata_sync", -1), ("play_counts", -1), ("recommend", 0),
                           ("vacuum", -1)],
          str(sorted(pods)))
    from kubernetes.client import ApiClient
    specs = {k: ApiClient().sanitize_for_serialization(p) for k, p in pods.items()}
    problems = []
    for key, pod in specs.items():
        spec = pod["spec"]
        base = next(c for c in spec["containers"] if c["name"] == "base")
        env = {e["name"]: e for e in base.get("env", [])}
        mounts = {m["name"]: m["mountPath"] for m in base.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        want = {
            "image": base["image"] == "streampulse/pipelines:latest",
            "args end with --xcom": base["args"][-1] == "--xcom",
            "resources": base["resources"] == {"requests": {"memory": "10240Mi", "cpu": "2"},
                                               "limits": {"memory": "10240Mi"}},
            "spill emptyDir at /spill": "emptyDir" in volumes.get("spill", {}) and mounts.get("spill") == "/spill"
                                        and env.get("SP_SPILL_DIR", {}).get("value") == "/spill",
            "uid 10001": spec["securityContext"].get("runAsUser") == 10001
                         and spec["securityContext"].get("runAsNonRoot") is True,
            "grace period": spec.get("terminationGracePeriodSeconds") == 120,
            "termination message": base.get("terminationMessagePolicy") == "FallbackToLogsOnError",
            "xcom sidecar": any(c["name"] == "airflow-xcom-sidecar" for c in spec["containers"])
                            and mounts.get("xcom") == "/airflow/xcom" and "emptyDir" in volumes.get("xcom", {}),
            "namespace": pod["metadata"]["namespace"] == "streampulse",
        }
        problems += [f"{key[0]}: {what}" for what, ok in want.items() if not ok]
    check("kubernetes pods: image, --xcom, resources, spill emptyDir, uid 10001, grace period, xcom sidecar",
          not problems, problems)
    meta_env = {e["name"]: e for e in next(c for c in specs[("metadata_sync", -1)]["spec"]["containers"]
                                           if c["name"] == "base")["env"]}
    check("kubernetes: the secrets are env from secretKeyRef of the Secret streampulse-pipelines",
          meta_env.get("SP_API_TOKEN", {}).get("valueFrom") == {"secretKeyRef": {"name": "streampulse-pipelines",
                                                                                "key": "api-token"}}
          and meta_env.get("SP_DATABASE_URL", {}).get("valueFrom") == {"secretKeyRef": {"name": "streampulse-pipelines",
                                                                                       "key": "database-url"}}
          and "value" not in meta_env["SP_DATABASE_URL"], meta_env)
    check("kubernetes: no secret value in any pod spec",
          all("Catal0g" not in json.dumps(s) and API_TOKEN not in json.dumps(s) for s in specs.values()))
    check("kubernetes: the recommend pod scores shard 0/1",
          next(c for c in specs[("recommend", 0)]["spec"]["containers"] if c["name"] == "base")["args"]
          == ["recommend", "--date", "2026-11-26", "--exclude-days", "7", "--shard", "0/1", "--xcom"])

    # -- the exit-code policy: Docker (a container that exits N) ---------------------------
    FakeDocker.containers.clear()
    docker_hook.APIClient = FakeDocker
    op = docker_tasks["play_counts"]
    try:
        for code, expect, needles in [
            (75, docker_module.PipelineRetry, ["exited 75", "temporary failure"]),
            (69, docker_module.PipelineRetry, ["exited 69", "a service is unavailable"]),
            (66, docker_module.InputMissing, ["exited 66", "input missing", "after 60 min"]),
            (65, AirflowFailException, ["exited 65", "input rejected", REJECTS]),
            (64, AirflowFailException, ["exited 64", "invalid flags"]),
            (70, AirflowFailException, ["exited 70", "internal error"]),
            (1, AirflowFailException, ["exited 1"]),
        ]:
            FakeDocker.exit_code, FakeDocker.log_lines = code, ["starting", REJECT_LOG] if code == 65 else ["starting"]
            op.__dict__.pop("hook", None)
            what = {docker_module.PipelineRetry: "retried",
                    docker_module.InputMissing: "retried after the input-missing delay",
                    AirflowFailException: "fails at once"}[expect]
            failure(f"docker: exit {code} {what}{' naming the rejects' if code == 65 else ''}",
                    lambda: op.execute({}), expect, *needles)
        FakeDocker.exit_code, FakeDocker.log_lines = 0, []
        op.__dict__.pop("hook", None)
        check("docker: exit 0 returns the JSON XCom", op.execute({}) == {
            "pipeline": "play-counts", "args": ["--date", "{{ ds }}", "--xcom"], "rows_out": 1234})
    finally:
        docker_hook.APIClient = real_client

    # -- the exit-code policy: Kubernetes (the pod's container status) ---------------------
    kop = tasks["play_counts"]
    for code, expect, needles in [
        (75, module.PipelineRetry, ["exited 75"]),
        (69, module.PipelineRetry, ["exited 69"]),
        (66, module.InputMissing, ["exited 66", "input missing"]),
        (65, AirflowFailException, ["exited 65", "input rejected", REJECTS]),
        (64, AirflowFailException, ["exited 64"]),
        (70, AirflowFailException, ["exited 70"]),
        (137, AirflowFailException, ["exited 137", "out of memory"]),
    ]:
        remote = pod_with_status(code, message=f"starting\n{REJECT_LOG}\n" if code == 65 else "starting\n")
        kop.__dict__["client"] = FakeCoreV1(remote)
        kop.__dict__.pop("pod_manager", None)
        what = {module.PipelineRetry: "retried", module.InputMissing: "retried after the input-missing delay",
                AirflowFailException: "fails at once"}[expect]
        failure(f"kubernetes: terminated.exit_code {code} {what}{' naming the rejects' if code == 65 else ''}",
                lambda: kop.cleanup(pod=remote, remote_pod=remote, context=None), expect, *needles)
    kop.__dict__["client"] = FakeCoreV1(pod_with_status(0))
    kop.__dict__.pop("pod_manager", None)
    try:
        kop.cleanup(pod=pod_with_status(0), remote_pod=pod_with_status(0), context=None)
        check("kubernetes: exit 0 is a success (the pod deleted)", ("delete", "play-counts-x1y2") in kop.client.calls)
    except Exception as error:  # noqa: BLE001
        check("kubernetes: exit 0 is a success (the pod deleted)", False, error)
    kop.__dict__["client"] = FakeCoreV1(pod_with_status(waiting="ImagePullBackOff"))
    kop.__dict__.pop("pod_manager", None)
    failure("kubernetes: a container that never ran (ImagePullBackOff) keeps the provider's error (ordinary retries)",
            lambda: kop.cleanup(pod=pod_with_status(waiting="ImagePullBackOff"),
                                remote_pod=pod_with_status(waiting="ImagePullBackOff"), context=None),
            AirflowException, "returned a failure")

    # -- kubernetes: the provider's own XCom path (exec into the sidecar) on our return.json --
    import airflow.providers.cncf.kubernetes.utils.pod_manager as pod_manager_module
    summary = {"pipeline": "play-counts", "args": ["--date", "2026-11-26", "--xcom"], "rows_out": 1234}
    execs = []

    class FakeExec:
        """The websocket client kubernetes.stream.stream returns: the network edge of an exec."""

        def __init__(self, container, command):
            self.container, self.command, self.open = container, command, True

        def run_forever(self, timeout=None):
            self.open = False

        def read_all(self):
            # The provider's command: `cat /airflow/xcom/return.json` if it is not empty.
            script = self.command[-1]
            return json.dumps(summary) + "\n" if "cat /airflow/xcom/return.json" in script else ""

        def peek_stderr(self):
            return False

        def read_stderr(self):
            return ""

        def is_open(self):
            return self.open

        def write_stdin(self, text):
            execs.append(("stdin", text))

        def update(self, timeout=None):
            self.open = False

        def peek_stdout(self):
            return False

        def read_stdout(self):
            return ""

        def close(self):
            self.open = False

    def fake_stream(api_call, name, namespace, **kwargs):
        execs.append((kwargs["container"], kwargs["command"]))
        return FakeExec(kwargs["container"], kwargs["command"])

    from kubernetes.client import models as k8s
    finished = pod_with_status(0)
    finished.status.container_statuses.append(k8s.V1ContainerStatus(
        name="airflow-xcom-sidecar", image="alpine", image_id="", ready=True, restart_count=0,
        state=k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())))
    kop.__dict__["client"] = FakeCoreV1(finished)
    kop.__dict__.pop("pod_manager", None)
    real_stream = pod_manager_module.kubernetes_stream
    pod_manager_module.kubernetes_stream = fake_stream
    try:
        got = kop.extract_xcom(finished)
        check("kubernetes: the provider's sidecar exec reads our return.json as the task's XCom",
              got == summary and execs[0][0] == "airflow-xcom-sidecar"
              and "/airflow/xcom/return.json" in execs[0][1][-1]
              and any(e[0] == "stdin" and "kill" in e[1] for e in execs), f"{got!r} {execs!r}")
    except Exception as error:  # noqa: BLE001
        check("kubernetes: the provider's sidecar exec reads our return.json as the task's XCom", False,
              f"{type(error).__name__}: {error}")
    finally:
        pod_manager_module.kubernetes_stream = real_stream

    # -- the retry policy (Airflow 3.3's retry_policy, evaluated in the worker) -------------
    for kind, task_dict, mod in [("kubernetes", tasks, module), ("docker", docker_tasks, docker_module)]:
        shard = task_dict["recommend"].unmap({"command": ["recommend", "--shard", "0/1"]})
        for name, op in [("play_counts", task_dict["play_counts"]), ("a recommend shard (mapped)", shard)]:
            policy = op.retry_policy
            missing = policy and policy.evaluate(mod.InputMissing("exited 66", 66), try_number=1, max_tries=3)
            temporary = policy and policy.evaluate(mod.PipelineRetry("exited 75", 75), try_number=1, max_tries=3)
            check(f"{kind}, {name}: 66 retried after 1 hour, 75/69 with the task's backoff",
                  policy is not None and missing.action == RetryAction.RETRY
                  and missing.retry_delay == timedelta(hours=1) and "input missing" in missing.reason
                  and temporary.action == RetryAction.DEFAULT, f"{policy} {missing} {temporary}")

    # -- deploy/recommend-indexed-job.yaml ---------------------------------------------------
    import yaml
    manifest = ROOT / "deploy" / "recommend-indexed-job.yaml"
    try:
        docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    except (OSError, yaml.YAMLError) as error:
        docs = []
        check("the Indexed Job manifest parses", False, error)
    else:
        check("the Indexed Job manifest parses", len(docs) == 1 and docs[0].get("kind") == "Job", docs)
    if docs:
        job = docs[0]
        # Through the kubernetes client's model: a misspelt or misplaced field does not survive.
        api = ApiClient()
        model = api._ApiClient__deserialize(job, "V1Job")
        check("the manifest matches the Kubernetes Job model", api.sanitize_for_serialization(model) == job)
        spec, pod = job["spec"], job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        args = container["args"]
        shard = args[args.index("--shard") + 1] if "--shard" in args else ""
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        check("Indexed Job: recommend --shard auto/N with N = completions = parallelism",
              spec.get("completionMode") == "Indexed" and args[0] == "recommend"
              and shard == f"auto/{spec.get('completions')}" and spec.get("parallelism") == spec.get("completions"),
              args)
        check("Indexed Job: uid 10001, emptyDir /spill, resources, grace period",
              pod["securityContext"].get("runAsUser") == 10001 and pod["securityContext"].get("runAsNonRoot")
              and any(v["name"] == "spill" and "emptyDir" in v for v in pod["volumes"])
              and mounts.get("spill") == "/spill" and env.get("SP_SPILL_DIR") == "/spill"
              and container["resources"]["limits"]["memory"] == container["resources"]["requests"]["memory"]
              == module.pod_memory(env.get("SP_MEMORY_LIMIT", "")) and pod.get("restartPolicy") == "Never"
              and pod.get("terminationGracePeriodSeconds") == 120, pod)
        rules = spec.get("podFailurePolicy", {}).get("rules", [])
        check("Indexed Job: 66, 69 and 75 retried per index, other exit codes fail the index at once",
              any(r["action"] == "FailIndex" and r.get("onExitCodes", {}).get("operator") == "NotIn"
                  and sorted(r["onExitCodes"]["values"]) == [66, 69, 75] for r in rules)
              and spec.get("backoffLimitPerIndex", 0) >= 1, rules)

    log_file.close()
    if all(results):
        shutil.rmtree(HOME, ignore_errors=True)
    else:
        print(f"task logs: {log_path}")
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


def timed_out(signum, frame):
    raise TimeoutError(f"the test took more than {TIME_LIMIT_S} s")


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(TIME_LIMIT_S)  # a run that hangs (a task waiting for a retry) fails instead
    try:
        main()
    except Exception:  # noqa: BLE001 - a crash is a failed check, shown (logs go to a file)
        traceback.print_exc(file=sys.__stderr__)
        check("the test ran to its end", False)
        print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
        sys.exit(1)
