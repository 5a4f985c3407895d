"""Shared helpers for the deploy/ tests: loaders, metric names, PromQL name extraction."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "stream-worker-dashboard.json"
METRIC_NAME = re.compile(r"\bstream_worker_[a-zA-Z0-9_]+")


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that accepts CloudFormation's short-form tags (!Ref, !GetAtt, !Sub ...),
    loading each as ``{"!Tag": value}``."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {f"!{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_tag)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=CloudFormationLoader)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def exported_metric_names() -> set[str]:
    """Every sample name the worker can expose, from worker/observability/metrics.py:
    counters as ``<name>_total`` (and ``_created``), histograms as ``_bucket``/``_sum``/``_count``,
    gauges as is, info as ``<name>_info``."""
    from prometheus_client.metrics import MetricWrapperBase

    from worker.observability import metrics
    from worker.observability.loop_metrics import LoopCollector

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "info": ("_info",),
        "stateset": ("",),
        "enum": ("",),
    }
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, (MetricWrapperBase, LoopCollector)):
            for described in value.describe():
                names.update(described.name + suffix for suffix in suffixes[described.type])
    return names


def metric_names_in(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def dashboard_panels() -> list[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        for panel in panels:
            found.append(panel)
            found.extend(walk(panel.get("panels", [])))
        return found

    return walk(load_json(DASHBOARD)["panels"])


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]


def concrete_expr(expr: str, job: str = "stream-worker", instance: str = ".*", rate_interval: str = "1m") -> str:
    """A dashboard expr with Grafana's variables filled in, as Grafana sends it."""
    return expr.replace("$__rate_interval", rate_interval).replace("$job", job).replace("$instance", instance)


def alert_rules() -> list[dict[str, Any]]:
    document = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]
