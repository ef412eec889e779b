"""The Prometheus configuration and alert rules, checked and unit-tested by Debian's promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.debian import debian_tool

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = debian_tool("prometheus", "usr/bin/promtool")
    return subprocess.run(
        [str(promtool), *args], cwd=DEPLOY, capture_output=True, text=True, check=False
    )


def test_the_scrape_config_and_rules_are_valid() -> None:
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 7 rules found" in rules.stdout


def test_each_alert_fires_when_it_should_and_not_otherwise() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
