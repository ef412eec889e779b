"""Shared test setup: which real services (PostgreSQL, Redis) this machine offers.

Tests marked `postgres` or `redis` run against the real servers named by
`TOLLGATE_TEST_POSTGRES_URL` / `TOLLGATE_TEST_REDIS_URL`. Where a server is unreachable they
are skipped with a clear notice, unless `TOLLGATE_TEST_REQUIRE_SERVICES=1` (set by CI), which
turns an unreachable server into a failure of each such test, at its set-up.
"""

from __future__ import annotations

import pytest

from tests.published import published, triton_install
from tests.services import POSTGRES_URL, REDIS_URL, REQUIRE_SERVICES, reachable

__all__ = ["published", "triton_install"]  # fixtures shared by the worker and gateway tests

_SERVICES = {"postgres": (POSTGRES_URL, 5432), "redis": (REDIS_URL, 6379)}


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_missing_key] = {
        name: url for name, (url, port) in _SERVICES.items() if not reachable(url, port)
    }


_missing_key = pytest.StashKey[dict[str, str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REQUIRE_SERVICES:
        return  # pytest_runtest_setup fails them instead
    missing = config.stash[_missing_key]
    for item in items:
        for name, url in missing.items():
            if name in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"{name} server at {url} is not reachable"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """With TOLLGATE_TEST_REQUIRE_SERVICES=1, a test that needs an unreachable server fails
    before it runs (a marker or fixture added at collection would be too late to count)."""
    if not REQUIRE_SERVICES:
        return
    for name, url in item.config.stash[_missing_key].items():
        if name in item.keywords:
            pytest.fail(
                f"TOLLGATE_TEST_REQUIRE_SERVICES=1 but the {name} server at {url} is unreachable",
                pytrace=False,
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    missing = config.stash[_missing_key]
    lines = [f"services: postgres={POSTGRES_URL} redis={REDIS_URL}"]
    for name, url in missing.items():
        lines.append(f"NOTICE: {name} at {url} is not reachable; tests marked {name} will skip")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    missing = terminalreporter.config.stash[_missing_key]
    for name, url in missing.items():
        terminalreporter.write_line(
            f"NOTICE: {name} at {url} was not reachable: tests marked '{name}' did not run",
            yellow=True,
            bold=True,
        )
