"""Every PromQL expression of the rules and dashboards parses and names only
metrics of the contract (tests/monitoring/metric_names.py) or recorded by the
rules themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import metric_names
from .monitoring_helpers import (
    dashboard_exprs,
    default_groups,
    promtool,
    records,
    substitute_grafana,
    write_rule_file,
)
from .monitoring_helpers import (
    metric_names as names_in,
)


def all_exprs() -> list[tuple[str, str]]:
    rules = [
        (f"rule {r.get('alert') or r.get('record')}", r["expr"])
        for g in default_groups()
        for r in g["rules"]
    ]
    return rules + [(f"dashboard {w}", substitute_grafana(e)) for w, e in dashboard_exprs()]


RECORDED = frozenset(r["record"] for r in records(default_groups()))


class TestMetricNames:
    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            ('sum by (namespace, le) (rate(a_total{le="0.5", x=~"b|c"}[5m])) > 0.5', {"a_total"}),
            ("histogram_quantile(0.99, sum(rate(b_bucket[5m])) by (le))", {"b_bucket"}),
            (
                "x:y:rate5m > 14.4 * (1 - 0.999) and on () up == 0 or absent(z)",
                {"x:y:rate5m", "up", "z"},
            ),
            ('{__name__="named", job="j"} offset 1h', {"named"}),
            ("max without (instance) (m) unless ignoring (a) n", {"m", "n"}),
            ('label_replace(q, "dst", "$1", "src", "(.*)") / 1e3', {"q"}),
        ],
    )
    def test_extraction(self, expr: str, expected: set[str]) -> None:
        assert names_in(expr) == expected

    def test_rules_and_dashboards_name_only_contract_metrics(self) -> None:
        exprs = all_exprs()
        assert len(exprs) > 40
        unknown = {
            where: sorted(names_in(expr) - metric_names.ALL - RECORDED)
            for where, expr in exprs
            if names_in(expr) - metric_names.ALL - RECORDED
        }
        assert unknown == {}

    def test_an_unknown_metric_is_caught(self) -> None:
        """The check above bites: the old DLQ alert's metric is not exported."""
        expr = 'max by (queue) (delta(taskhub_dlq_messages{namespace="taskhub"}[15m])) > 0'
        assert names_in(expr) - metric_names.ALL == {"taskhub_dlq_messages"}

    def test_every_rule_selects_a_metric(self) -> None:
        for where, expr in all_exprs():
            assert names_in(expr), where

    def test_groups_are_disjoint(self) -> None:
        groups = [
            metric_names.API,
            metric_names.WORKERS,
            metric_names.RELAY,
            metric_names.BEAT,
            metric_names.OPERATOR,
            metric_names.RABBITMQ,
            metric_names.KUBE_STATE_METRICS,
            metric_names.CNPG,
            metric_names.PROMETHEUS,
        ]
        assert sum(len(g) for g in groups) == len(metric_names.ALL)


@pytest.mark.usefixtures("prometheus_dir")
class TestParse:
    def test_every_expression_parses(self, tmp_path: Path) -> None:
        """promtool parses each expression wrapped as a recording rule (one
        group per expression, so an error names its source)."""
        exprs = all_exprs()
        groups = [
            {"name": f"{i}: {where}", "rules": [{"record": f"check:expr{i}", "expr": expr}]}
            for i, (where, expr) in enumerate(exprs)
        ]
        result = promtool("check", "rules", str(write_rule_file(tmp_path / "all.yaml", groups)))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(exprs)} rules found" in result.stdout

    def test_a_syntax_error_is_caught(self, tmp_path: Path) -> None:
        groups = [{"name": "bad", "rules": [{"record": "check:bad", "expr": "rate(up[5m]"}]}]
        result = promtool("check", "rules", str(write_rule_file(tmp_path / "bad.yaml", groups)))
        assert result.returncode != 0
