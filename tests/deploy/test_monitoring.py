"""Monitoring artifacts: the alert rules (plain file and PrometheusRule) and the Grafana dashboard.

promtool (Debian's ``prometheus`` package, installed by scripts/install-system-deps) checks the
rules; that every ``tokenward_*`` metric they and the dashboard use is really exported is
checked against a live service in tests/test_observability.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "tokenward-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tokenward-dashboard.json"
K8S = ROOT / "k8s" / "monitoring"
REQUIRED_ALERTS = {
    "TokenwardRedisErrors",
    "TokenwardHigh503Rate",
    "TokenwardSubscriberLagging",
    "TokenwardRefreshReuseSpike",
    "RedisEvictedKeys",
    "RedisMemoryHigh",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        raise RuntimeError("promtool is not installed: run scripts/install-system-deps (Debian package prometheus)")
    return found


def _check_rules(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def _rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    cmd = [kubectl, "kustomize", str(K8S)] if kubectl else [shutil.which("kustomize") or "kustomize", "build", str(K8S)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _prometheus_rule() -> dict[str, Any]:
    (rule,) = [d for d in _rendered() if d["kind"] == "PrometheusRule"]
    return rule


def test_plain_rules_pass_promtool() -> None:
    proc = _check_rules(RULES)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_prometheusrule_spec_passes_promtool(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(_prometheus_rule()["spec"]))
    proc = _check_rules(spec)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(tokenward_x[5m] > 1\n")
    assert _check_rules(broken).returncode != 0, "the check above would prove nothing"


def test_both_rule_files_carry_identical_groups() -> None:
    plain = yaml.safe_load(RULES.read_text())
    assert _prometheus_rule()["spec"]["groups"] == plain["groups"]


def test_rules_cover_what_sres_asked_for() -> None:
    plain = yaml.safe_load(RULES.read_text())
    rules = [r for g in plain["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    for r in rules:
        assert r["labels"]["severity"] in {"info", "warning", "critical"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_dashboard_ships_as_a_configmap_copy() -> None:
    assert (K8S / "tokenward-dashboard.json").read_bytes() == DASHBOARD.read_bytes(), (
        "k8s/monitoring/tokenward-dashboard.json must be a copy of deploy/grafana/tokenward-dashboard.json"
    )
    (cm,) = [d for d in _rendered() if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert orjson.loads(cm["data"]["tokenward-dashboard.json"]) == orjson.loads(DASHBOARD.read_bytes())


def test_dashboard_is_well_formed() -> None:
    dash = orjson.loads(DASHBOARD.read_bytes())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(graphs) >= 15
    for p in graphs:
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]


def test_servicemonitor_scrapes_with_a_metrics_client() -> None:
    (sm,) = [d for d in _rendered() if d["kind"] == "ServiceMonitor"]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert endpoint["basicAuth"]["password"]["name"] == "tokenward-metrics-auth"
    service = yaml.safe_load((ROOT / "k8s" / "base" / "workload" / "service.yaml").read_text())
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]


def test_alerts_fire_on_what_they_are_for() -> None:
    """promtool's rule unit tests: synthetic series in, expected alerts (and silences) out."""
    tests = RULES.with_name("tokenward-rules.test.yml")
    proc = subprocess.run(
        [_promtool(), "test", "rules", tests.name],
        cwd=tests.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
