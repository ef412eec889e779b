"""TOLLGATE_TEST_REQUIRE_SERVICES: with it (CI), a test that needs an unreachable server fails;
without it, the test is skipped and the run says so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.published import ROOT

TEST = "tests/gateway/test_ratelimit.py::test_redis_admits_exactly_the_capacity_under_concurrency"
DEAD = "redis://127.0.0.1:9/0"  # the discard port: nothing answers


def _pytest(require: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_TEST_REQUIRE_SERVICES"}
    env["TOLLGATE_TEST_REDIS_URL"] = DEAD
    if require:
        env["TOLLGATE_TEST_REQUIRE_SERVICES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("require", [True, False], ids=["required", "optional"])
def test_an_unreachable_server_fails_the_tests_that_need_it_only_when_required(
    require: bool,
) -> None:
    done = _pytest(require)
    if require:
        assert done.returncode == 1, done.stdout
        assert f"the redis server at {DEAD} is unreachable" in done.stdout
        assert "1 error" in done.stdout  # failed at set-up, before the test body ran
    else:
        assert done.returncode == 0, done.stdout
        assert "1 skipped" in done.stdout
        assert f"redis at {DEAD} was not reachable" in done.stdout
