"""Helpers for the monitoring tests: the rendered PrometheusRule, promtool, and
the metric names a PromQL expression selects. (A uniquely named module rather
than conftest.py, like tests/charts/chart_helpers.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "charts"))

from chart_helpers import NAMESPACE, REPO_ROOT, merged, parse, render

ENSURE_PROMETHEUS = REPO_ROOT / "scripts" / "ensure-prometheus.sh"
DASHBOARDS_DIR = REPO_ROOT / "charts" / "taskhub" / "dashboards"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"

# The chart's default release is named "taskhub": these are the `job` labels
# its ServiceMonitors give the API (its Service's name, though Prometheus scrapes
# the metrics Service) and the workers.
API_JOB = "taskhub-api"
WORKER_JOB = "taskhub-worker-metrics"
RELAY_JOB = "taskhub-relay-metrics"
RULES_ON = {"metrics": {"prometheusRule": {"enabled": True}}}


@cache
def prometheus_bin() -> Path:
    """The directory with promtool and prometheus (Debian's package, unpacked)."""
    out = subprocess.run(
        [str(ENSURE_PROMETHEUS)], check=True, capture_output=True, text=True, timeout=600
    )
    return Path(out.stdout.strip().splitlines()[-1])


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prometheus_bin() / "promtool"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def rule_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """spec.groups of the PrometheusRule the chart renders with these values
    (rules enabled), as a Prometheus rule file's `groups`."""
    objects, _ = parse(render(merged(RULES_ON, values or {})))
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["app.kubernetes.io/component"] == "monitoring"
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


@cache
def default_groups() -> tuple[dict[str, Any], ...]:
    return tuple(rule_groups())


def alerts(groups: Any) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def records(groups: Any) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "record" in r]


def write_rule_file(path: Path, groups: Any) -> Path:
    path.write_text(yaml.safe_dump({"groups": list(groups)}, sort_keys=False))
    return path


# -- Metric names in PromQL --------------------------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "atan2"}
    # Aggregations may take their grouping before the parenthesis: `sum by (x) (...)`.
    | {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?!\w)(\s*\()?")
_NUMBER_LIKE = re.compile(r"^(0x[0-9a-f]+|\d.*|e\d+)$", re.IGNORECASE)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are neither
    functions, keywords, label names (in matchers and groupings) nor numbers.
    `{__name__="x"}` counts as x."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _GROUPING.sub(r"\1 ()", text)
    for match in _IDENT.finditer(text):
        ident, call = match.group(1), match.group(2)
        if call or ident.lower() in _KEYWORDS or _NUMBER_LIKE.match(ident):
            continue
        names.add(ident)
    return names


# Grafana's variables, replaced by values Prometheus accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "5m",
    "${__interval}": "1m",
    "${__range}": "1h",
}


def substitute_grafana(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    # Template variables ($namespace, ${job}, ${job:regex}) become a label value.
    return re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", NAMESPACE, expr)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) of every panel target in charts/taskhub/dashboards/*.json,
    rows' nested panels included."""
    import json

    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]], where: str) -> None:
        for panel in panels:
            title = f"{where}/{panel.get('title', panel.get('id', '?'))}"
            for i, target in enumerate(panel.get("targets") or []):
                if target.get("expr"):
                    found.append((f"{title}[{i}]", target["expr"]))
            walk(panel.get("panels") or [], title)

    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        walk(json.loads(path.read_text()).get("panels") or [], path.name)
    return found


def scrape_jobs(values: dict[str, Any] | None = None) -> dict[str, str]:
    """component -> the `job` label the chart's ServiceMonitor gives that component's
    targets: Prometheus Operator's default, the name of the Service it selects (among
    those with the endpoint's port), unless a relabeling of the endpoint sets it."""
    on = merged(RULES_ON, {"metrics": {"serviceMonitor": {"enabled": True}}})
    objects, _ = parse(render(merged(on, values or {})))
    services = [o for o in objects if o["kind"] == "Service"]
    jobs: dict[str, str] = {}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        assert "jobLabel" not in monitor["spec"], monitor["metadata"]["name"]
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        for endpoint in monitor["spec"]["endpoints"]:
            for service in services:
                ports = {p.get("name") for p in service["spec"]["ports"]}
                if wanted <= service["metadata"]["labels"].items() and endpoint["port"] in ports:
                    jobs[component] = service["metadata"]["name"]
            for relabeling in endpoint.get("relabelings", []):
                if relabeling.get("targetLabel") == "job":
                    assert not relabeling.get("sourceLabels"), relabeling
                    jobs[component] = relabeling["replacement"]
    return jobs
