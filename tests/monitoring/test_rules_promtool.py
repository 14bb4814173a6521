"""The chart's PrometheusRule under promtool: it loads, and every alert fires on
the series it is about (with its exact labels and rendered annotations) and
stays quiet on series it must ignore."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .alert_cases import RUNBOOK_URL, case, fired, gauge
from .cause_cases import CAUSE_CASES
from .monitoring_helpers import (
    RUNBOOK,
    alerts,
    default_groups,
    promtool,
    records,
    rule_groups,
    write_rule_file,
)
from .slo_cases import SLO_CASES

CASES = SLO_CASES + CAUSE_CASES


def covered(cases: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """Alerts some case expects to fire, and alerts some case expects silent."""
    firing: set[str] = set()
    silent: set[str] = set()
    for c in cases:
        for test in c["alert_rule_test"]:
            (firing if test["exp_alerts"] else silent).add(test["alertname"])
    return firing, silent


def run_promtool_tests(tmp_path: Path, groups: Any, cases: list[dict[str, Any]]) -> str:
    write_rule_file(tmp_path / "rules.yaml", groups)
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": cases}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.usefixtures("prometheus_dir")
class TestPromtool:
    @pytest.mark.parametrize("profile", ["defaults", "production"])
    def test_check_rules(self, tmp_path: Path, profile: str) -> None:
        from chart_helpers import PROFILES, load_values

        path = write_rule_file(tmp_path / "rules.yaml", rule_groups(load_values(PROFILES[profile])))
        result = promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_check_rules_catches_a_broken_rule(self, tmp_path: Path) -> None:
        broken = [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(up[5m])"}]}]
        result = promtool("check", "rules", str(write_rule_file(tmp_path / "r.yaml", broken)))
        assert result.returncode != 0

    def test_every_alert_fires_and_stays_silent(self, tmp_path: Path) -> None:
        names = {a["alert"] for a in alerts(default_groups())}
        firing, silent = covered(CASES)
        assert names - firing == set(), "alerts no case fires"
        assert names - silent == set(), "alerts no case keeps silent"
        assert (firing | silent) - names == set(), "cases of alerts that do not exist"
        out = run_promtool_tests(tmp_path, default_groups(), CASES)
        assert "SUCCESS" in out

    def test_the_cases_catch_probes_counted_as_traffic(self, tmp_path: Path) -> None:
        """Without the probe exclusion, the probe case must fail."""
        exclusion = ', route!~"/health|/health/live|/health/ready|/metrics"'
        groups = [
            {**g, "rules": [{**r, "expr": r["expr"].replace(exclusion, "")} for r in g["rules"]]}
            for g in default_groups()
        ]
        assert groups != list(default_groups())
        (probes,) = [c for c in CASES if c["name"].startswith("Failing and slow probes")]
        write_rule_file(tmp_path / "rules.yaml", groups)
        tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [probes]}
        (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
        result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
        assert result.returncode != 0
        assert "TaskHubApiAvailabilityBudgetBurnFast" in result.stdout + result.stderr

    def test_a_group_that_scales_to_zero_is_unavailable_only_while_work_waits(
        self, tmp_path: Path
    ) -> None:
        groups = rule_groups(
            {"workers": {"groups": {"webhooks": {"autoscaling": {"minReplicas": 0}}}}}
        )
        ksm = 'namespace="taskhub", job="kube-state-metrics"'
        rmq = 'namespace="taskhub", vhost="/"'
        available = {
            "series": f"kube_deployment_status_replicas_available{{{ksm}, "
            'deployment="taskhub-worker-webhooks"}',
            "values": "0x30",
        }
        description = (
            "Deployment taskhub-worker-webhooks in namespace taskhub (worker group webhooks) "
            "has had no available replica for 10 minutes; its queues webhooks are not consumed."
        )
        cases = [
            case(
                "Scaled to zero with messages waiting",
                [available, gauge(f'rabbitmq_queue_messages{{{rmq}, queue="webhooks"}}', 4)],
                "15m",
                {
                    "TaskHubWorkerGroupUnavailable": [
                        fired(
                            "TaskHubWorkerGroupUnavailable",
                            {
                                "namespace": "taskhub",
                                "job": "kube-state-metrics",
                                "deployment": "taskhub-worker-webhooks",
                                "worker_group": "webhooks",
                                "severity": "critical",
                            },
                            description,
                        )
                    ]
                },
            ),
            case(
                "Scaled to zero and idle (another queue busy)",
                [
                    available,
                    gauge(f'rabbitmq_queue_messages{{{rmq}, queue="webhooks"}}', 0),
                    gauge(f'rabbitmq_queue_messages{{{rmq}, queue="webhooks.dlq"}}', 3),
                    gauge(f'rabbitmq_queue_messages{{{rmq}, queue="notifications"}}', 9),
                ],
                "15m",
                {"TaskHubWorkerGroupUnavailable": []},
            ),
        ]
        assert "SUCCESS" in run_promtool_tests(tmp_path, groups, cases)

    def test_thresholds_come_from_values(self, tmp_path: Path) -> None:
        groups = rule_groups(
            {
                "metrics": {
                    "prometheusRule": {"outboxMaxAgeSeconds": 1200, "replicaLagMaxBytes": 67108864}
                }
            }
        )
        relay = 'namespace="taskhub", job="taskhub-relay-metrics", instance="r"'
        api = 'namespace="taskhub", job="taskhub-api", instance="a"'
        cases = [
            case(
                "15 minutes of outbox age and 32 MiB of lag are within these limits",
                [
                    gauge(f"taskhub_outbox_oldest_pending_age_seconds{{{relay}}}", 900),
                    gauge(f"taskhub_db_replica_lag_bytes{{{api}}}", 33554432),
                ],
                "15m",
                {"TaskHubOutboxLagging": [], "TaskHubDatabaseReplicaLagging": []},
            )
        ]
        assert "SUCCESS" in run_promtool_tests(tmp_path, groups, cases)

    def test_a_wrong_expectation_fails(self, tmp_path: Path) -> None:
        """promtool really compares: a case expecting the wrong text fails."""
        (wrong,) = [c for c in CASES if c["name"].startswith("The outbox's oldest")]
        wrong = yaml.safe_load(yaml.safe_dump(wrong))
        wrong["alert_rule_test"][0]["exp_alerts"][0]["exp_annotations"]["description"] = "x"
        write_rule_file(tmp_path / "rules.yaml", default_groups())
        tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [wrong]}
        (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
        assert promtool("test", "rules", "tests.yaml", cwd=tmp_path).returncode != 0


class TestAnnotations:
    def test_every_alert_is_annotated(self) -> None:
        for alert in alerts(default_groups()):
            annotations = alert["annotations"]
            assert set(annotations) == {"summary", "description", "runbook_url"}, alert["alert"]
            assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
            assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{alert['alert'].lower()}"

    def test_runbook_has_a_section_per_alert(self) -> None:
        headings = set(re.findall(r"^## (\w+)\s*$", RUNBOOK.read_text(), re.MULTILINE))
        names = {a["alert"] for a in alerts(default_groups())}
        assert names - headings == set()
        assert headings - names == set(), "runbook sections of alerts that do not exist"

    def test_runbook_links_resolve(self) -> None:
        text = RUNBOOK.read_text()
        anchors = {h.lower() for h in re.findall(r"^## (\w+)\s*$", text, re.MULTILINE)}
        for link in re.findall(r"\]\(#([\w-]+)\)", text):
            assert link in anchors | {"service-level-objectives"}, link

    def test_runbook_base_url_is_configurable(self) -> None:
        groups = rule_groups(
            {"metrics": {"prometheusRule": {"runbookBaseUrl": "https://wiki.example/rb/"}}}
        )
        urls = {a["annotations"]["runbook_url"] for a in alerts(groups)}
        assert "https://wiki.example/rb#taskhubapidown" in urls
        assert all(u.startswith("https://wiki.example/rb#") for u in urls)

    def test_description_labels_survive_the_aggregation(self) -> None:
        """A label a description prints must be kept by the expression's outer
        aggregation (the old error-ratio alert's sum() dropped `namespace`)."""
        for alert in alerts(default_groups()):
            used = set(re.findall(r"\$labels\.(\w+)", alert["annotations"]["description"]))
            for agg in re.findall(r"^\s*\w+ by \(([^)]*)\)", alert["expr"], re.MULTILINE):
                assert used <= {x.strip() for x in agg.split(",")}, alert["alert"]


class TestRecordingRules:
    def test_three_slis_over_seven_windows(self) -> None:
        names = {r["record"] for r in records(default_groups())}
        windows = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
        slis = ("api_errors", "api_slow_requests", "jobs_dead_lettered")
        assert names == {f"taskhub_slo:{s}:ratio_rate{w}" for s in slis for w in windows}

    def test_slis_exclude_probes_and_scrapes(self) -> None:
        for rule in records(default_groups()):
            if rule["record"].startswith("taskhub_slo:api_"):
                for selector in re.findall(r"taskhub_http_\w+\{[^}]*\}", rule["expr"]):
                    assert 'route!~"/health|/health/live|/health/ready|/metrics"' in selector

    def test_objectives_come_from_values(self) -> None:
        groups = rule_groups({"metrics": {"prometheusRule": {"slo": {"apiAvailability": 0.995}}}})
        (fast,) = [
            a for a in alerts(groups) if a["alert"] == "TaskHubApiAvailabilityBudgetBurnFast"
        ]
        assert "14.4 * (1 - 0.995)" in fast["expr"]
        assert "99.5% objective" in fast["annotations"]["description"]

    def test_rabbitmq_selector_replaces_the_namespace(self) -> None:
        selector = 'cluster="shared-broker", vhost="taskhub"'
        groups = rule_groups({"metrics": {"prometheusRule": {"rabbitmqSelector": selector}}})
        rabbit = [a for a in alerts(groups) if "rabbitmq_" in a["expr"]]
        assert {a["alert"] for a in rabbit} >= {
            "TaskHubDeadLetterQueueNotEmpty",
            "TaskHubQueueWithoutConsumers",
        }
        for alert in rabbit:
            for selected in re.findall(r"rabbitmq_\w+\{([^}]*)\}", alert["expr"]):
                assert selected.startswith(selector), alert["alert"]
