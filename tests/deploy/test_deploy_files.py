"""Every file under deploy/ parses and is valid for the tool that consumes it; the ECS task
fits the worker's shutdown budget; alerts and dashboard use only metrics the worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters

from tests.deploy.deploy_files import (
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_DIR,
    REPO,
    alert_rules,
    concrete_expr,
    dashboard_exprs,
    dashboard_panels,
    exported_metric_names,
    load_json,
    load_yaml,
    metric_names_in,
)
from tests.deploy.prometheus_tools import PrometheusTools
from worker.config import MetricsConfig, WorkerSettings

TASK_DEFINITION = DEPLOY / "ecs" / "task-definition.json"
SERVICE = DEPLOY / "ecs" / "service.json"
OPERATIONS_DOC = REPO / "docs" / "operations.md"


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


# -- every file parses -------------------------------------------------------------------------

def test_every_json_and_yaml_file_under_deploy_parses() -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".json", ".yml", ".yaml"})
    names = {p.relative_to(DEPLOY).as_posix() for p in files}
    assert {
        "ecs/task-definition.json", "ecs/service.json", "iam/worker-policy.json",
        "cloudformation/tables.yaml", "prometheus/prometheus.yml", "prometheus/alerts.yml",
        "prometheus/alerts_test.yml", "grafana/stream-worker-dashboard.json",
    } <= names
    for path in files:
        document = load_json(path) if path.suffix == ".json" else load_yaml(path)
        assert isinstance(document, dict) and document, f"{path} is empty or not a mapping"


def test_cloudformation_tags_load_with_the_tag_aware_loader() -> None:
    template = load_yaml(DEPLOY / "cloudformation" / "tables.yaml")
    assert template["Outputs"]["OrdersStreamArn"]["Value"] == {"!GetAtt": "OrdersTable.StreamArn"}


# -- Prometheus ----------------------------------------------------------------------------------

def test_promtool_check_config(prom_tools: PrometheusTools) -> None:
    result = _run([prom_tools.promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # alerts.yml is wired in


def test_promtool_check_rules(prom_tools: PrometheusTools) -> None:
    result = _run([prom_tools.promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(prom_tools: PrometheusTools) -> None:
    result = _run([prom_tools.promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_catch_a_broken_rule(prom_tools: PrometheusTools, tmp_path: Path) -> None:
    """The unit tests have teeth: a LagHigh threshold of an hour instead of 5 minutes fails them."""
    shutil.copy(PROMETHEUS_DIR / "alerts_test.yml", tmp_path / "alerts_test.yml")
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    broken = rules.replace("stream_worker_last_handled_record_age_seconds{job=\"stream-worker\"}) > 300",
                           "stream_worker_last_handled_record_age_seconds{job=\"stream-worker\"}) > 3600")
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    result = _run([prom_tools.promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    assert result.returncode != 0 and "LagHigh" in result.stdout + result.stderr


def _examples(text: str) -> list[str]:
    block = text.split("# --- BEGIN service discovery examples", 1)[1].split("# --- END", 1)[0]
    jobs: list[list[str]] = []
    for line in block.splitlines():
        match = re.match(r"^  # (  .*|- job_name:.*)$", line)
        if match is None:
            continue
        if match.group(1).startswith("- job_name:"):
            jobs.append([])
        jobs[-1].append("  " + match.group(1))
    return ["\n".join(job) + "\n" for job in jobs]


def test_commented_service_discovery_examples_are_valid(prom_tools: PrometheusTools, tmp_path: Path) -> None:
    examples = _examples((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert len(examples) == 2 and "file_sd_configs" in examples[0] and "ec2_sd_configs" in examples[1]
    for index, job in enumerate(examples):
        config = tmp_path / f"example{index}.yml"
        config.write_text("scrape_configs:\n" + job)
        result = _run([prom_tools.promtool, "check", "config", config.name], cwd=tmp_path)
        assert result.returncode == 0, f"example {index}:\n{job}\n{result.stdout}{result.stderr}"


def test_scrape_job_matches_the_alerts_and_the_worker_port() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "stream-worker"]
    assert job["metrics_path"] == "/metrics"
    port = MetricsConfig().port
    assert port == 9400
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets and all(t.endswith(f":{port}") for t in targets)
    assert config["rule_files"] == ["alerts.yml"]
    for rule in alert_rules():
        if "stream_worker_" in rule["expr"] or "up{" in rule["expr"]:
            assert 'job="stream-worker"' in rule["expr"], rule["alert"]


REQUIRED_ALERTS = {"ShardStalled", "LagHigh", "NearRetention", "DeadLettersAppearing", "LeasesLost", "WorkerDown",
                   "NotReady", "LoopCrashes", "ShardsOverCap", "CheckpointFailures"}


def _anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_alerts_are_complete_annotated_and_tested() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert REQUIRED_ALERTS <= names
    anchors = _anchors(OPERATIONS_DOC.read_text())
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/operations.md" and anchor in anchors, f"{rule['alert']}: no section #{anchor}"
    near = {rule["labels"]["severity"]: rule["expr"] for rule in rules if rule["alert"] == "NearRetention"}
    assert "6 * 3600" in near["warning"] and "18 * 3600" in near["critical"]
    assert any('event="lost"' in rule["expr"] for rule in rules if rule["alert"] == "LeasesLost")
    assert any("stream_worker_records_dead_lettered_total" in rule["expr"]
               for rule in rules if rule["alert"] == "DeadLettersAppearing")

    tests = load_yaml(PROMETHEUS_DIR / "alerts_test.yml")
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert names <= fired, f"alerts never tested firing: {sorted(names - fired)}"
    assert names <= silent, f"alerts never tested silent: {sorted(names - silent)}"
    severities = {alert["exp_labels"]["severity"] for case in cases if case["alertname"] == "NearRetention"
                  for alert in case.get("exp_alerts") or []}
    assert severities == {"warning", "critical"}


def test_alerts_use_only_exported_metrics() -> None:
    exported = exported_metric_names()
    for rule in alert_rules():
        unknown = metric_names_in(rule["expr"]) - exported
        assert not unknown, f"alert {rule['alert']} uses metrics the worker does not export: {sorted(unknown)}"


# -- ECS -------------------------------------------------------------------------------------------

def _ecs_input_shape(operation: str) -> Any:
    return botocore.session.get_session().get_service_model("ecs").operation_model(operation).input_shape


def test_task_definition_is_a_valid_register_task_definition_request() -> None:
    validate_parameters(load_json(TASK_DEFINITION), _ecs_input_shape("RegisterTaskDefinition"))


def test_service_is_a_valid_create_service_request() -> None:
    service = load_json(SERVICE)
    validate_parameters(service, _ecs_input_shape("CreateService"))
    assert service["desiredCount"] == 3
    deployment = service["deploymentConfiguration"]
    # New tasks start before old ones stop: never below the desired count during a deploy.
    assert deployment["minimumHealthyPercent"] == 100 and deployment["maximumPercent"] == 200
    assert service["taskDefinition"] == load_json(TASK_DEFINITION)["family"]


def _container() -> dict[str, Any]:
    (container,) = load_json(TASK_DEFINITION)["containerDefinitions"]
    return container


def test_stop_timeout_exceeds_the_worker_shutdown_budget() -> None:
    default_budget = WorkerSettings.model_fields["shutdown_timeout_seconds"].default
    seed_budget = load_yaml(REPO / "config" / "worker.yaml")["worker"]["shutdown_timeout_seconds"]
    stop_timeout = _container()["stopTimeout"]
    assert stop_timeout == 60
    assert stop_timeout > default_budget and stop_timeout > seed_budget
    assert stop_timeout <= 120  # the Fargate maximum


def test_task_definition_settings() -> None:
    task = load_json(TASK_DEFINITION)
    container = _container()
    assert "${" not in json.dumps(task), "placeholders must be concrete values so the JSON registers as is"
    assert set(task["requiresCompatibilities"]) == {"FARGATE", "EC2"} and task["networkMode"] == "awsvpc"
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", task["taskRoleArn"])
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/stream-worker:.+", container["image"])
    port = MetricsConfig().port
    assert [m["containerPort"] for m in container["portMappings"]] == [port]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["AWS_REGION"] == "us-east-1"
    assert int(env.get("METRICS_PORT", port)) == port  # the healthcheck command reads METRICS_PORT
    assert container["healthCheck"]["command"] == ["CMD", "stream-worker", "healthcheck"]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    labels = container["dockerLabels"]
    assert labels["PROMETHEUS_EXPORTER_PORT"] == str(port) and labels["PROMETHEUS_EXPORTER_PATH"] == "/metrics"
    assert labels["PROMETHEUS_EXPORTER_JOB_NAME"] == "stream-worker"
    # The image's user (Dockerfile: USER 10001:10001) and entry point.
    assert container["user"] == "10001:10001" and container["command"] == ["run"]


def test_health_check_command_exists_in_the_cli() -> None:
    from worker.cli import build_parser

    args = build_parser().parse_args(_container()["healthCheck"]["command"][2:])
    assert callable(args.func)


@pytest.mark.integration
def test_ecs_files_register_on_moto(moto_url: str) -> None:
    """The task definition registers and the service is created as written, with only the
    example subnet and security-group ids swapped for ones that exist in moto's EC2."""
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1")
    ecs = boto3.client("ecs", endpoint_url=moto_url, region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    group = ec2.create_security_group(GroupName="stream-worker-test", Description="test", VpcId=vpc)["GroupId"]
    service = load_json(SERVICE)
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert len(network["subnets"]) == 2 and len(network["securityGroups"]) == 1
    network.update(subnets=subnets, securityGroups=[group])
    ecs.create_cluster(clusterName=service["cluster"])
    registered = ecs.register_task_definition(**load_json(TASK_DEFINITION))["taskDefinition"]
    try:
        container = registered["containerDefinitions"][0]
        assert container["stopTimeout"] == 60
        assert container["healthCheck"]["command"] == ["CMD", "stream-worker", "healthcheck"]
        created = ecs.create_service(**service)["service"]
        try:
            # (moto does not echo deploymentConfiguration; test_service_is_a_valid_create_service_request checks it)
            assert created["desiredCount"] == 3 and created["launchType"] == "FARGATE"
            assert created["taskDefinition"] == registered["taskDefinitionArn"]
        finally:
            ecs.delete_service(cluster=service["cluster"], service=service["serviceName"], force=True)
    finally:
        ecs.deregister_task_definition(taskDefinition=registered["taskDefinitionArn"])


# -- Grafana ----------------------------------------------------------------------------------------

def test_dashboard_structure() -> None:
    dashboard = load_json(DASHBOARD)
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_dashboard_uses_only_exported_metrics() -> None:
    exported = exported_metric_names()
    for title, expr in dashboard_exprs():
        unknown = metric_names_in(expr) - exported
        assert not unknown, f"panel {title!r} queries metrics the worker does not export: {sorted(unknown)}"


def test_dashboard_covers_the_operating_questions() -> None:
    used = set().union(*(metric_names_in(expr) for _, expr in dashboard_exprs()))
    exprs = " ".join(expr for _, expr in dashboard_exprs())
    assert {
        "stream_worker_records_handled_total",             # handled/s by route and outcome
        "stream_worker_records_dead_lettered_total",       # dead letters
        "stream_worker_last_handled_record_age_seconds",   # lag
        "stream_worker_shard_seconds_since_tip_max",
        "stream_worker_get_records_total",                 # GetRecords rate
        "stream_worker_get_records_duration_seconds_bucket",
        "stream_worker_aws_retries_total",                 # throttles
        "stream_worker_leases_held",
        "stream_worker_lease_events_total",
        "stream_worker_checkpoints_total",
        "stream_worker_handler_duration_seconds_bucket",
        "stream_worker_up",
        "stream_worker_ready",
    } <= used
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert "sum by (route, outcome)" in exprs and re.search(r"\bup\{", exprs)


def test_dashboard_queries_are_valid_promql(prom_tools: PrometheusTools, tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule, with Grafana's variables filled in)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{index}", "expr": concrete_expr(expr)}
        for index, (_, expr) in enumerate(dashboard_exprs())
    ]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))
    result = _run([prom_tools.promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
