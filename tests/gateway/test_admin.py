"""Operators move traffic between versions through the admin API, against a real tritonserver,
real Redis and two gateway replicas: Triton loads a version before an alias names it, changes
are audited, retries act once, races get 409, no request fails while traffic moves, and a
broken canary is pulled automatically."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.identity.tokens import TokenService
from hosting.cli import server_for
from hosting.config import HostingSettings
from hosting.model_config import write_model_config
from hosting.server import TritonServer
from registry import aliases, migrate
from registry.db import connect, writing
from registry.integrity import rebuild_from_repository
from registry.manifest import read_manifest, write_manifest
from tests.cli import run_module
from tests.published import free_port, on_free_ports
from tests.services import REDIS_URL
from tests.workers.test_failure import _break
from workers.artifacts import resolve

pytestmark = pytest.mark.redis

SECRET = "admin-e2e-secret-" + "y" * 32


def _copy_version(source: Path, target: Path, version: int) -> None:
    shutil.copytree(source, target)
    manifest = read_manifest(target)
    manifest.version = version
    write_manifest(target, manifest)


def _corrupt(version_dir: Path, choice: str) -> None:
    """Change the served artifact's bytes but not its recorded SHA-256: it must not load."""
    served = resolve(version_dir, choice)  # type: ignore[arg-type]
    data = bytearray(served.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    served.path.write_bytes(bytes(data))


@dataclass
class Fleet:
    settings: GatewaySettings
    bases: list[str]  # replica A (in this process), replica B (a process of its own)
    grpc_url: str
    triton: TritonServer

    def token(self, subject: str, scopes: str = "generate") -> str:
        issued, _ = TokenService(self.settings).issue(
            subject=subject, scopes=frozenset(scopes.split(","))
        )
        return issued

    def admin(self, base: int = 0) -> httpx.Client:
        return httpx.Client(
            base_url=self.bases[base],
            timeout=120,
            headers={"Authorization": f"Bearer {self.token('ops@example.com', 'admin')}"},
        )

    def state(self) -> dict[str, Any]:
        with self.admin() as client:
            answer = client.get("/admin/models/gen")
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

    def served_by(self, base: int, subject: str) -> int:
        auth = {"Authorization": f"Bearer {self.token(subject)}"}
        answer = httpx.post(
            f"{self.bases[base]}/v1/generate",
            json={"prompt": "x", "max_tokens": 1, "temperature": 0.7},
            headers=auth,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["version"])


def _env(settings: GatewaySettings) -> dict[str, str]:
    return {
        **os.environ,
        "TOLLGATE_VAR_DIR": str(settings.registry.var_dir),
        "TOLLGATE_DATABASE_URL": settings.registry.database_url,
        "TOLLGATE_MODEL_REPOSITORY": str(settings.registry.model_repository),
        "TOLLGATE_REDIS_URL": settings.redis_url,
        "TOLLGATE_JWT_SECRET": settings.jwt_secret,
        "TOLLGATE_TRITON_GRPC_PORT": str(settings.triton.grpc_port),
        "TOLLGATE_TRITON_HTTP_PORT": str(settings.triton.http_port),
        "TOLLGATE_DEFAULT_MODEL": "gen",
        "TOLLGATE_RATE_REQUESTS_CAPACITY": str(10**6),
        "TOLLGATE_RATE_TOKENS_CAPACITY": str(10**8),
        "TOLLGATE_RECONCILE_INTERVAL_S": "0",  # replica A reconciles; B only routes
        "TOLLGATE_CANARY_CHECK_INTERVAL_S": "0",
        "TOLLGATE_LOG_LEVEL": "warning",
    }


@pytest.fixture(scope="module")
def fleet(published: HostingSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("admin")
    repository = root / "repo"
    source = published.registry.model_repository / "gen"
    for version in (1, 2):
        _copy_version(source / str(version), repository / "gen" / str(version), version)
    # v3 loads but its engine fails every request; v4's artifact no longer matches its SHA-256.
    _copy_version(source / "2", repository / "gen" / "3", 3)
    _copy_version(source / "2", repository / "gen" / "4", 4)
    hosting = on_free_ports(
        published,
        registry={
            "var_dir": root / "var",
            "model_repository": repository,
            "database_url": f"sqlite:///{root / 'registry.db'}",
        },
        engine={"max_active": 16, "max_queue": 64},
        exit_timeout_s=2,
    )
    settings = GatewaySettings(
        registry=hosting.registry,
        triton=hosting.triton,
        engine=hosting.engine,
        port=free_port(),
        jwt_secret=SECRET,
        redis_url=REDIS_URL,
        default_model="gen",
        cache_ttl_s=0,
        rate_requests_capacity=10**6,
        rate_tokens_capacity=10**8,
        reconcile_interval_s=1,
        unload_grace_s=3,
        canary_window_s=60,
        canary_min_requests=8,
        canary_check_interval_s=0.5,
        # The gates here judge errors only (a broken canary is pulled). The load's six callers
        # stick to their side of a canary, three sending short plain requests and three long
        # streams, so each side's latency depends on which callers it drew, not on its
        # version: the latency rule is tested on its own (test_gates).
        canary_max_latency_ratio=1000,
    )
    _break(repository / "gen" / "3", settings.engine.artifact)
    db = connect(settings.registry)
    migrate.upgrade(db)
    with writing(db) as session:
        rebuild_from_repository(session=session, repository=repository)
        aliases.set_alias(
            session=session,
            model="gen",
            alias="production",
            version=1,
            actor="test",
            reason="start",
        )
    db.dispose()
    # Registered as ready, then damaged on the worker's disk: Triton refuses to load it.
    _corrupt(repository / "gen" / "4", settings.engine.artifact)
    write_model_config(repository, "gen", [1], settings.engine, settings.triton)
    with server_for(settings.hosting, ["gen"]) as triton:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        other_port = free_port()
        other = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env={**_env(settings), "TOLLGATE_PORT": str(other_port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            bases = [f"http://127.0.0.1:{settings.port}", f"http://127.0.0.1:{other_port}"]
            deadline = time.monotonic() + 60
            for base in bases:
                while True:
                    try:
                        if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, f"{base} did not become ready"
                    time.sleep(0.2)
            running = Fleet(settings, bases, f"127.0.0.1:{settings.triton.grpc_port}", triton)
            running.served_by(0, "warm-up")
            yield running
        finally:
            other.terminate()
            other.wait(30)
            server.should_exit = True
            thread.join(15)


def _ready_versions(fleet: Fleet) -> set[int]:
    index = httpx.post(
        f"http://127.0.0.1:{fleet.settings.triton.http_port}/v2/repository/index",
        json={"ready": True},
        timeout=10,
    ).json()
    return {int(m["version"]) for m in index if m["name"] == "gen" and m.get("version")}


def test_reads_need_admin_and_show_versions_state_and_history(fleet: Fleet) -> None:
    user = {"Authorization": f"Bearer {fleet.token('someone')}"}
    refused = httpx.get(f"{fleet.bases[0]}/admin/models", headers=user)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "insufficient_scope")
    with fleet.admin() as client:
        models = client.get("/admin/models").json()
        assert [m["name"] for m in models["items"]] == ["gen"]
        assert models["items"][0]["aliases"][0]["alias"] == "production"
        page = client.get("/admin/models/gen/versions", params={"limit": 3}).json()
        assert [v["version"] for v in page["items"]] == [4, 3, 2]
        assert page["next_cursor"] is not None
        assert page["items"][0]["dataset_sha256"]
        assert "hyperparameters" in page["items"][0]
        rest = client.get("/admin/models/gen/versions", params={"cursor": page["next_cursor"]})
        assert [v["version"] for v in rest.json()["items"]] == [1]
        state = client.get("/admin/models/gen")
        assert state.headers["etag"] == f'"{state.json()["revision"]}"'
        assert state.json()["canary_gate"]["status"] == "none"
        missing = client.get("/admin/models/nope/history")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")
        no_reason = client.post("/admin/models/gen/promote", json={"version": 2})
        assert no_reason.status_code == 422


@dataclass
class Load:
    """Clients calling the gateway without pause; every answer is kept."""

    fleet: Fleet
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[str, int, str, int]] = field(default_factory=list)  # kind, status, ...
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, plain: int = 3, streaming: int = 3) -> None:
        for i in range(plain + streaming):
            kind = "stream" if i >= plain else "plain"
            thread = threading.Thread(target=self._client, args=(kind, i), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self, kind: str, index: int) -> None:
        auth = {"Authorization": f"Bearer {self.fleet.token(f'load-{index}')}"}
        base = self.fleet.bases[index % 2]
        with httpx.Client(base_url=base, timeout=120, headers=auth) as client:
            while not self.stop.is_set():
                body = {"prompt": random.choice(["def f(", "import ", "x = "]), "temperature": 0.8}
                if kind == "plain":
                    answer = client.post("/v1/generate", json={**body, "max_tokens": 32})
                    version = answer.json().get("version", 0) if answer.status_code == 200 else 0
                    self.results.append((kind, answer.status_code, answer.text[:200], version))
                    continue
                with client.stream(
                    "POST", "/v1/generate", json={**body, "max_tokens": 200, "stream": True}
                ) as stream:
                    lines = list(stream.iter_lines())
                ends = [
                    json.loads(x[6:]) for x in lines if x.startswith("data: ") and '"usage"' in x
                ]
                events = [x for x in lines if x.startswith("event: ")]
                complete = stream.status_code == 200 and events == ["event: end"] and ends
                version = ends[0]["version"] if complete else 0
                text = "complete" if complete else "\n".join(lines)[-300:]
                self.results.append((kind, stream.status_code if complete else 0, text, version))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


def test_promote_canary_and_rollback_under_load_fail_no_request(fleet: Fleet) -> None:
    load = Load(fleet)
    load.start()
    try:
        with fleet.admin() as client:
            steps: list[tuple[str, str, dict[str, Any]]] = [
                ("POST", "/admin/models/gen/promote", {"version": 2, "reason": "better eval"}),
                ("PUT", "/admin/models/gen/canary", {"version": 1, "weight": 50, "reason": "a/b"}),
                ("DELETE", "/admin/models/gen/canary", {"reason": "a/b done"}),
                ("POST", "/admin/models/gen/rollback", {"reason": "regression"}),
                ("POST", "/admin/models/gen/promote", {"version": 2, "reason": "fixed"}),
                ("POST", "/admin/models/gen/rollback", {"reason": "again"}),
            ]
            for method, path, body in steps:
                time.sleep(1.5)
                answer = client.request(method, path, json=body)
                assert answer.status_code == 200, answer.text
                if path.endswith("promote"):
                    assert body["version"] in _ready_versions(fleet)
            time.sleep(1.5)
            production = [a for a in fleet.state()["aliases"] if a["alias"] == "production"]
            assert production[0]["version"] == 1
            history = client.get("/admin/models/gen/history", params={"limit": 20}).json()
    finally:
        load.finish()
    failed = [r for r in load.results if r[1] != 200]
    assert not failed, failed[:5]
    assert len(load.results) > 30
    assert {r[3] for r in load.results} == {1, 2}, "traffic moved between the versions"
    streams = [r for r in load.results if r[0] == "stream"]
    assert streams
    assert all(r[2] == "complete" for r in streams)
    actions = [(e["action"], e["alias"], e["to_version"]) for e in history["items"][:6]]
    assert actions == [
        ("rollback", "production", 1),
        ("set", "production", 2),
        ("rollback", "production", 1),
        ("clear", "canary", None),
        ("set", "canary", 1),
        ("set", "production", 2),
    ]
    assert {e["actor"] for e in history["items"][:6]} == {"ops@example.com"}
    # Once the grace period is over, the reconciler unloads what nothing needs: v1 is
    # production, and the last rollback went back to the first state, before which there is
    # nothing to roll back to, so v2 goes.
    time.sleep(fleet.settings.unload_grace_s + 3)
    assert _ready_versions(fleet) == {1}


def test_every_replica_routes_the_new_way_within_two_seconds(fleet: Fleet) -> None:
    current = fleet.served_by(1, "replica-probe")
    target = 2 if current == 1 else 1
    with fleet.admin() as client:
        answer = client.post(
            "/admin/models/gen/promote", json={"version": target, "reason": "replicas"}
        )
        assert answer.status_code == 200, answer.text
    returned = time.monotonic()
    while fleet.served_by(1, "replica-probe") != target:
        assert time.monotonic() - returned < 2.0, "replica B still routes the old way"
        time.sleep(0.05)
    assert fleet.served_by(0, "replica-probe") == target
    # The previous production version stays loaded, for an instant rollback.
    time.sleep(fleet.settings.unload_grace_s + 3)
    assert _ready_versions(fleet) == {1, 2}


def test_retries_act_once_and_racing_changes_get_409(fleet: Fleet) -> None:
    with fleet.admin() as client:
        state = fleet.state()
        current = next(a["version"] for a in state["aliases"] if a["alias"] == "production")
        target = 2 if current == 1 else 1
        key = {"Idempotency-Key": uuid.uuid4().hex}
        body = {"version": target, "reason": "idempotent"}
        first = client.post("/admin/models/gen/promote", json=body, headers=key)
        again = client.post("/admin/models/gen/promote", json=body, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        history = client.get("/admin/models/gen/history", params={"limit": 3}).json()["items"]
        assert [e["reason"] for e in history].count("idempotent") == 1, "acted once"
        reused = client.post(
            "/admin/models/gen/promote", json={**body, "reason": "other"}, headers=key
        )
        assert (reused.status_code, reused.json()["error"]["code"]) == (
            422,
            "idempotency_key_reused",
        )

        stale = {"If-Match": f'"{state["revision"]}"'}
        refused = client.post(
            "/admin/models/gen/promote", json={"version": current, "reason": "x"}, headers=stale
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "conflict"
        assert refused.json()["error"]["current"]["revision"] == first.json()["revision"]

        # Two operators act on the same revision at once: one wins, the other gets 409.
        seen = {"If-Match": client.get("/admin/models/gen").headers["etag"]}

        def act(change: tuple[str, dict[str, Any]]) -> int:
            method, payload = change
            with fleet.admin() as mine:
                path = "/admin/models/gen/" + ("canary" if method == "PUT" else "promote")
                return mine.request(method, path, json=payload, headers=seen).status_code

        changes = [
            ("PUT", {"version": current, "weight": 10, "reason": "race a"}),
            ("POST", {"version": current, "reason": "race b"}),
        ]
        with ThreadPoolExecutor(2) as pool:
            statuses = sorted(pool.map(act, changes))
        assert statuses == [200, 409]
        client.request("DELETE", "/admin/models/gen/canary", json={"reason": "tidy"})


def test_a_version_that_fails_to_load_is_never_made_live(fleet: Fleet) -> None:
    before = fleet.state()
    with fleet.admin() as client:
        answer = client.post("/admin/models/gen/promote", json={"version": 4, "reason": "try"})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "version_not_servable"
    assert "gen" in answer.json()["error"]["message"]
    after = fleet.state()
    assert after["aliases"] == before["aliases"]
    assert after["revision"] == before["revision"]
    fleet.served_by(0, "after-failed-load")  # production still answers


def test_a_broken_canary_is_pulled_automatically_and_production_is_unaffected(
    fleet: Fleet,
) -> None:
    production = next(a["version"] for a in fleet.state()["aliases"] if a["alias"] == "production")
    with fleet.admin() as client:
        answer = client.put(
            "/admin/models/gen/canary", json={"version": 3, "weight": 50, "reason": "try v3"}
        )
        assert answer.status_code == 200, answer.text
    outcomes: list[tuple[int, int]] = []  # (status, version) per distinct caller
    deadline = time.monotonic() + 60
    pulled = False
    i = 0
    while not pulled:
        assert time.monotonic() < deadline, "the broken canary was never pulled"
        auth = {"Authorization": f"Bearer {fleet.token(f'caller-{i}')}"}
        i += 1
        reply = httpx.post(
            f"{fleet.bases[0]}/v1/generate",
            json={"prompt": "x", "max_tokens": 4, "temperature": 0.7},
            headers=auth,
            timeout=60,
        )
        outcomes.append((reply.status_code, reply.json().get("version", 0)))
        canary = [a for a in fleet.state()["aliases"] if a["alias"] == "canary"]
        pulled = bool(canary) and canary[0]["weight"] == 0
    served = [o for o in outcomes if o[0] == 200]
    assert served
    assert all(version == production for _, version in served), "only production answered"
    assert any(status == 503 for status, _ in outcomes), "the canary's callers saw it fail"
    with fleet.admin() as client:
        event = client.get("/admin/models/gen/history", params={"limit": 1}).json()["items"][0]
        assert (event["alias"], event["to_version"], event["weight"]) == ("canary", 3, 0)
        assert event["actor"] == "tollgate:canary-gate"
        assert event["reason"].startswith("automatic rollback: canary error rate")
        assert "'requests'" in event["reason"]
        client.request("DELETE", "/admin/models/gen/canary", json={"reason": "tidy"})
    # Every caller is served by production again.
    for j in range(10):
        assert fleet.served_by(0, f"after-{j}") == production


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOLLGATE_JWT_SECRET": SECRET, "COLUMNS": "250"}
    return run_module("gateway", "admin", *args, "--url", fleet.bases[0], env=env, timeout=300)


def test_the_admin_cli_wraps_the_api_for_operators(fleet: Fleet) -> None:
    current = next(a["version"] for a in fleet.state()["aliases"] if a["alias"] == "production")
    target = 2 if current == 1 else 1
    promoted = _cli(fleet, "promote", "gen", str(target), "--reason", "from the cli", "--as", "ana")
    assert promoted.returncode == 0, promoted.stderr
    assert f"production set (v{current} → v{target})" in promoted.stdout
    status = _cli(fleet, "status", "gen")
    assert f"production → v{target}" in status.stdout
    history = _cli(fleet, "history", "gen", "--limit", "1", "--json")
    event = json.loads(history.stdout)["items"][0]
    assert (event["actor"], event["reason"], event["to_version"]) == ("ana", "from the cli", target)
    at = _cli(fleet, "history", "gen", "--at", event["created_at"])
    assert f"production → v{target}" in at.stdout
    table = _cli(fleet, "history", "gen", "--limit", "3")
    assert "from the cli" in table.stdout
    missing = _cli(fleet, "promote", "gen", "99", "--reason", "nope")
    assert missing.returncode == 1
    assert "version_not_found" in missing.stderr
    no_reason = _cli(fleet, "canary", "gen", "1")
    assert no_reason.returncode == 1
    assert "--reason" in no_reason.stderr


def test_a_restarted_worker_is_brought_back_to_the_desired_state(fleet: Fleet) -> None:
    production = next(a["version"] for a in fleet.state()["aliases"] if a["alias"] == "production")
    other = 2 if production == 1 else 1
    # The worker comes back holding only the other version (its files say so), as a worker
    # restarted from a stale repository would.
    fleet.triton.stop()
    write_model_config(
        fleet.settings.registry.model_repository,
        "gen",
        [other],
        fleet.settings.engine,
        fleet.settings.triton,
    )
    fleet.triton.start()
    deadline = time.monotonic() + 60
    while production not in _ready_versions(fleet):
        assert time.monotonic() < deadline, "the reconciler never loaded production again"
        time.sleep(0.5)
    assert fleet.served_by(0, "after-restart") == production


def test_a_revoked_admin_key_loses_every_route_on_every_replica_at_once(fleet: Fleet) -> None:
    """An admin key's token worked on the admin API until the key was revoked, and went on
    working there after (only the generation path consulted revocation)."""
    with fleet.admin() as ops:
        made = ops.post("/admin/keys", json={"name": "ops-bot", "scopes": ["admin", "generate"]})
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["key_id"]
    exchanged = httpx.post(
        f"{fleet.bases[0]}/v1/token",
        data={"grant_type": "client_credentials", "client_secret": key},
        timeout=30,
    )
    assert exchanged.status_code == 200, exchanged.text
    auth = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
    routes = [
        ("GET", "/admin/models", None),
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"name": "minted", "scopes": ["admin"]}),
        ("GET", "/v1/models", None),
    ]
    for base in fleet.bases:
        for method, path, body in routes[:2] + routes[3:]:
            answer = httpx.request(method, f"{base}{path}", json=body, headers=auth, timeout=30)
            assert answer.status_code == 200, (base, path, answer.text)
    with fleet.admin() as ops:
        assert ops.delete(f"/admin/keys/{key_id}").status_code == 200
    for base in fleet.bases:  # both replicas, with no wait
        for method, path, body in routes:
            answer = httpx.request(method, f"{base}{path}", json=body, headers=auth, timeout=30)
            assert answer.status_code == 401, (base, path, answer.text)
            assert answer.json()["error"]["code"] == "key_revoked", (base, path)
