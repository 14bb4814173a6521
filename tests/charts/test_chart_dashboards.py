"""The Grafana dashboards: the committed JSON is what scripts/dashboards.py
writes, it passes our dashboard lint, and the chart ships it as sidecar
ConfigMaps."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import helm_python as helm
import pytest
import yaml
from chart_helpers import CHART_DIR, REPO_ROOT, parse, render, rendered_profile

GENERATOR = REPO_ROOT / "scripts" / "dashboards.py"
ENSURE_PROMETHEUS = REPO_ROOT / "scripts" / "ensure-prometheus.sh"
BURN_WINDOWS = ("1h", "6h", "1d", "3d")
DASHBOARDS_DIR = CHART_DIR / "dashboards"
COMMITTED = sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
# Stable: links, bookmarks and the upstream docs name dashboards by uid.
UIDS = {
    "slo.json": "taskhub-slo",
    "api.json": "taskhub-api",
    "data.json": "taskhub-data",
    "jobs.json": "taskhub-jobs",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana 10.0 writes 38, 11.x up to 41.
SCHEMA_VERSIONS = range(38, 42)
API_SLI_EXCLUSION = 'route!~"/health.*|/metrics"'
# What each dashboard must show, by the series it queries.
REQUIRED = {
    "slo.json": [
        'ALERTS{alertstate="firing", namespace="$namespace"}',
        "taskhub_http_requests_total",
        'taskhub_http_request_duration_seconds_bucket{namespace="$namespace", '
        'route!~"/health.*|/metrics", le="0.5"}',
        'outcome="dead_lettered"',
        # Burn-rate and budget windows, as subqueries at the SLO step.
        *(f"[{w}:5m]" for w in (*BURN_WINDOWS, "30d")),
    ],
    "api.json": [
        "sum by (route, status) (rate(taskhub_http_requests_total",
        'status=~"5.."',
        *(f"histogram_quantile({q}, sum by (route, le)" for q in (0.5, 0.95, 0.99)),
        "taskhub_ratelimit_decisions_total",
        'outcome="fail_open"',
        "kube_deployment_status_replicas_available",
    ],
    "data.json": [
        "taskhub_db_up",
        "cnpg_collector_up",
        "taskhub_db_replica_lag_bytes",
        "cnpg_pg_replication_lag",
        "sum by (target) (rate(taskhub_db_reads_total",
        'result="hit"',
        "taskhub_redis_up",
        "taskhub_redis_errors_total",
        "taskhub_db_pool_checked_out",
        "histogram_quantile(0.99, sum by (pool, le) (rate(taskhub_db_pool_wait_seconds_bucket",
        "cnpg_pgbouncer_pools_cl_waiting",
    ],
    "jobs.json": [
        "sum by (task, outcome) (rate(taskhub_jobs_total",
        'outcome=~"succeeded|dead_lettered"',
        *(f"histogram_quantile({q}, sum by (task, le)" for q in (0.5, 0.95, 0.99)),
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_consumers",
        'rabbitmq_queue_messages{namespace="$namespace", queue=~".+[.]dlq"}',
        "histogram_quantile(0.95, sum by (task, le) (rate(taskhub_job_queue_wait_seconds_bucket",
        "taskhub_outbox_pending_events",
        "taskhub_outbox_oldest_pending_age_seconds",
        "taskhub_relay_published_total",
        "taskhub_relay_failed_total",
    ],
}


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("taskhub_dashboards_script", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def promtool_path() -> str:
    """promtool from Debian's prometheus package, unpacked (never installed)."""
    out = subprocess.run(
        [str(ENSURE_PROMETHEUS)], check=True, capture_output=True, text=True, timeout=600
    )
    return str(Path(out.stdout.strip().splitlines()[-1]) / "promtool")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_path(), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS_DIR / name).read_text())
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels, including those collapsed into rows."""
    found = []
    for item in panels:
        found.append(item)
        found += all_panels(item.get("panels") or [])
    return found


def closing_paren(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError(f"unbalanced parentheses in {text!r}")


def fixed_rate_windows(expr: str) -> list[str]:
    """Range selectors of `rate`, `irate` and `increase` calls that are not
    `$__rate_interval` (which follows the scrape interval and the zoom)."""
    bad = []
    for match in re.finditer(r"\b(?:i?rate|increase)\s*\(", expr):
        argument = expr[match.end() : closing_paren(expr, match.end() - 1)]
        windows = re.findall(r"\[([^\]]*)\]", argument)
        if not windows:
            bad.append(f"{match.group(0)}... without a range")
        bad += [w for w in windows if w != "$__rate_interval"]
    return bad


def lint(dashboard: dict[str, Any]) -> list[str]:
    """Our conventions for a dashboard; an empty list when it keeps them."""
    problems: list[str] = []
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    if (source.get("type"), source.get("query")) != ("datasource", "prometheus"):
        problems.append("no $datasource variable of type datasource, query prometheus")
    if variables.get("namespace", {}).get("datasource") != DATASOURCE:
        problems.append("no $namespace variable queried through ${datasource}")
    if dashboard.get("schemaVersion") not in SCHEMA_VERSIONS:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} is not Grafana 10/11")
    ids: list[int] = []
    for panel in all_panels(dashboard.get("panels", [])):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        ids.append(panel.get("id", -1))
        if panel.get("type") == "row":
            continue
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no fieldConfig.defaults.unit")
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{where}: panel datasource is not ${{datasource}}")
        if not panel.get("targets"):
            problems.append(f"{where}: no targets")
        for target in panel.get("targets", []):
            if target.get("datasource") != DATASOURCE:
                problems.append(f"{where} {target.get('refId')}: datasource is not ${{datasource}}")
            problems += [
                f"{where} {target.get('refId')}: rate window [{w}] is not $__rate_interval"
                for w in fixed_rate_windows(target.get("expr", ""))
            ]
    if len(ids) != len(set(ids)) or -1 in ids:
        problems.append(f"panel ids not unique: {sorted(ids)}")
    return problems


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in all_panels(dashboard["panels"]) for t in p.get("targets", [])]


def dashboard_configmaps(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard")
    ]


class TestGenerator:
    def test_four_dashboards_are_committed(self) -> None:
        assert sorted(UIDS) == COMMITTED

    def test_committed_files_are_what_it_writes(self, tmp_path: Path) -> None:
        subprocess.run(
            [sys.executable, str(GENERATOR), "--output", str(tmp_path)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        fresh = sorted(p.name for p in tmp_path.iterdir())
        assert fresh == COMMITTED
        stale = [
            n for n in fresh if (tmp_path / n).read_bytes() != (DASHBOARDS_DIR / n).read_bytes()
        ]
        assert stale == [], "run .venv/bin/python scripts/dashboards.py and commit the result"

    def test_build_is_deterministic(self) -> None:
        first, second = generator().build(), generator().build()
        assert first == second
        assert first == {n: (DASHBOARDS_DIR / n).read_text() for n in COMMITTED}


class TestLint:
    @pytest.mark.parametrize("name", COMMITTED)
    def test_dashboard_keeps_the_conventions(self, name: str) -> None:
        assert lint(load(name)) == []

    @pytest.mark.parametrize("name", COMMITTED)
    def test_uid_is_stable(self, name: str) -> None:
        assert load(name)["uid"] == UIDS[name]

    def test_uids_are_unique(self) -> None:
        uids = [load(n)["uid"] for n in COMMITTED]
        assert len(uids) == len(set(uids))

    @pytest.mark.parametrize("name", COMMITTED)
    def test_shows_what_it_is_for(self, name: str) -> None:
        text = "\n".join(exprs(load(name)))
        assert [needle for needle in REQUIRED[name] if needle not in text] == []

    @pytest.mark.parametrize("name", COMMITTED)
    def test_api_slis_exclude_probes_and_scrapes(self, name: str) -> None:
        for expr in exprs(load(name)):
            for selector in re.findall(r"taskhub_http_request\w*\{[^}]*\}", expr):
                assert API_SLI_EXCLUSION in selector, expr

    @pytest.mark.parametrize("name", COMMITTED)
    def test_subquery_steps_match_the_panel_interval(self, name: str) -> None:
        # $__rate_interval exceeds the panel's minimum interval, so with the
        # subquery step equal to it consecutive rate windows overlap.
        for panel in all_panels(load(name)["panels"]):
            steps = {
                step
                for t in panel.get("targets", [])
                for step in re.findall(r"\[\w+:(\w+)\]", t["expr"])
            }
            if steps:
                assert steps == {panel.get("interval")}, panel["title"]

    @pytest.mark.parametrize("name", COMMITTED)
    def test_panels_fit_the_grid_without_overlap(self, name: str) -> None:
        taken: set[tuple[int, int]] = set()
        for panel in all_panels(load(name)["panels"]):
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & taken, panel["title"]
            taken |= cells


class TestLintCatches:
    """The lint above must be able to fail."""

    def good(self) -> dict[str, Any]:
        return load("api.json")

    def test_good_dashboard_passes(self) -> None:
        assert lint(self.good()) == []

    @pytest.mark.parametrize(
        ("expr", "window"),
        [
            ("sum(rate(x[5m]))", "5m"),
            ("increase(x[1h])", "1h"),
            ('irate(x{a="b"}[$__interval])', "$__interval"),
            ("sum_over_time(rate(x[$__rate_interval])[1h:5m]) / rate(y[2m])", "2m"),
        ],
    )
    def test_fixed_rate_window(self, expr: str, window: str) -> None:
        assert fixed_rate_windows(expr) == [window]

    def test_subquery_over_rate_interval_is_fine(self) -> None:
        assert fixed_rate_windows("sum_over_time((sum(rate(x[$__rate_interval])))[30d:5m])") == []

    def test_missing_unit(self) -> None:
        dashboard = self.good()
        del dashboard["panels"][0]["fieldConfig"]["defaults"]["unit"]
        assert any("no fieldConfig.defaults.unit" in p for p in lint(dashboard))

    def test_duplicate_id(self) -> None:
        dashboard = self.good()
        dashboard["panels"][1]["id"] = dashboard["panels"][0]["id"]
        assert any("panel ids not unique" in p for p in lint(dashboard))

    def test_fixed_datasource(self) -> None:
        dashboard = self.good()
        dashboard["panels"][0]["targets"][0]["datasource"] = {"uid": "prometheus"}
        assert any("datasource is not ${datasource}" in p for p in lint(dashboard))

    def test_no_datasource_variable(self) -> None:
        dashboard = self.good()
        dashboard["templating"]["list"] = dashboard["templating"]["list"][1:]
        assert any("no $datasource variable" in p for p in lint(dashboard))


class TestSloMath:
    """The SLO overview's queries, evaluated by promtool on synthetic series:
    1 request in 1000 fails (the availability budget, exactly spent), 2 % are
    slower than 0.5 s (twice the latency budget), 1 delivered job in 100 is
    dead-lettered; probes' 503s and retries must not count."""

    API = 'namespace="taskhub", route="/api/tasks", method="GET"'
    JOBS = 'namespace="taskhub", task="notifications.send"'
    SERIES: ClassVar[dict[str, int]] = {  # series: increase per minute
        f'taskhub_http_requests_total{{{API}, status="200"}}': 999,
        f'taskhub_http_requests_total{{{API}, status="500"}}': 1,
        'taskhub_http_requests_total{namespace="taskhub", route="/health/ready", '
        'method="GET", status="503"}': 500,
        f'taskhub_http_request_duration_seconds_bucket{{{API}, le="0.5"}}': 980,
        f'taskhub_http_request_duration_seconds_bucket{{{API}, le="+Inf"}}': 1000,
        f'taskhub_jobs_total{{{JOBS}, outcome="succeeded"}}': 99,
        f'taskhub_jobs_total{{{JOBS}, outcome="dead_lettered"}}': 1,
        f'taskhub_jobs_total{{{JOBS}, outcome="retried"}}': 50,
    }
    # panel title: value of every target, after a day of such traffic.
    EXPECTED: ClassVar[dict[str, float]] = {
        "Availability SLI (30 d)": 0.999,
        "Availability error budget left (30 d)": 0,
        "Availability burn rate": 1,
        "Latency SLI (30 d)": 0.98,
        "Latency error budget left (30 d)": -1,
        "Latency burn rate": 2,
        "Job delivery SLI (30 d)": 0.99,
        "Job delivery error budget left (30 d)": 0,
        "Job delivery burn rate": 1,
    }

    def test_sli_budget_and_burn_rates(self, tmp_path: Path) -> None:
        cases = []
        for panel in load("slo.json")["panels"]:
            if panel["title"] not in self.EXPECTED:
                continue
            for tgt in panel["targets"]:
                # Grafana's $__rate_interval at a 5 m minimum interval and 1 m scrapes.
                expr = tgt["expr"].replace("$__rate_interval", "6m")
                expr = expr.replace("$namespace", "taskhub")
                value = self.EXPECTED[panel["title"]]
                cases.append(
                    {
                        "expr": f"abs(({expr}) - ({value})) < bool 1e-9",
                        "eval_time": "1d",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                )
        assert len(cases) == 3 * 2 + 3 * len(BURN_WINDOWS)
        series = [{"series": s, "values": f"0+{n}x1500"} for s, n in self.SERIES.items()]
        test = {"interval": "1m", "input_series": series, "promql_expr_test": cases}
        (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": [], "tests": [test]}))
        result = promtool("test", "rules", "test.yaml", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def enabled(**dashboards: Any) -> list[dict[str, Any]]:
    objects, _ = parse(render({"metrics": {"dashboards": {"enabled": True, **dashboards}}}))
    return objects


class TestChart:
    def test_off_by_default(self) -> None:
        assert dashboard_configmaps(rendered_profile("defaults").objects) == []

    def test_one_configmap_per_dashboard(self) -> None:
        configmaps = dashboard_configmaps(enabled())
        assert sorted(c["metadata"]["name"] for c in configmaps) == [
            f"taskhub-dashboard-{n.removesuffix('.json')}" for n in COMMITTED
        ]
        for configmap in configmaps:
            meta = configmap["metadata"]
            assert meta["labels"]["grafana_dashboard"] == "1"
            assert meta["labels"]["app.kubernetes.io/component"] == "monitoring"
            assert meta["annotations"] == {"grafana_folder": "TaskHub"}
            ((key, text),) = configmap["data"].items()
            assert meta["name"].endswith(key.removesuffix(".json"))
            # Byte for byte the committed file, so the sidecar loads what was tested.
            assert text == (DASHBOARDS_DIR / key).read_text()
            assert json.loads(text)["uid"] == UIDS[key]

    def test_folder_annotation_and_labels_from_values(self) -> None:
        configmaps = dashboard_configmaps(
            enabled(
                folder="Platform / TaskHub",
                folderAnnotation="k8s-sidecar-target-directory",
                labels={"team": "core"},
            )
        )
        assert len(configmaps) == len(COMMITTED)
        for configmap in configmaps:
            meta = configmap["metadata"]
            assert meta["annotations"] == {"k8s-sidecar-target-directory": "Platform / TaskHub"}
            assert meta["labels"]["team"] == "core"
            assert meta["labels"]["grafana_dashboard"] == "1"

    def test_production_profile_ships_them(self) -> None:
        # So the chart tests validate them with every other rendered object.
        assert len(dashboard_configmaps(rendered_profile("production").objects)) == len(COMMITTED)

    @pytest.mark.parametrize(
        ("dashboards", "message"),
        [
            ({"folder": ""}, "at '/metrics/dashboards/folder'"),
            (
                {"folderAnnotation": "not an annotation"},
                "at '/metrics/dashboards/folderAnnotation'",
            ),
            ({"enabled": "yes"}, "at '/metrics/dashboards/enabled': got string, want boolean"),
        ],
    )
    def test_schema_rejects(self, dashboards: dict[str, Any], message: str) -> None:
        with pytest.raises(helm.HelmValuesError) as excinfo:
            render({"metrics": {"dashboards": dashboards}})
        assert message in str(excinfo.value)
