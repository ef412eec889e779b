"""The gateway end to end: real HTTP, a real tritonserver with a trained model, real Redis."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.identity.api_keys import KeyInfo, KeyLimits, create_key
from gateway.identity.tokens import TokenService
from hosting.cli import prepare, server_for
from hosting.config import HostingSettings
from registry.db import connect
from tests.cli import run_module
from tests.debian import debian_tool
from tests.published import free_port, on_free_ports
from tests.services import REDIS_URL

pytestmark = pytest.mark.redis

SECRET = "e2e-secret-" + "x" * 32


@dataclass
class System:
    settings: GatewaySettings
    base: str
    spans: InMemorySpanExporter

    def token(self, subject: str, scopes: str = "generate") -> str:
        issued, _ = TokenService(self.settings).issue(
            subject=subject, scopes=frozenset(scopes.split(","))
        )
        return issued

    def key(self, name: str, limits: KeyLimits) -> tuple[str, KeyInfo]:
        """A new API key with `generate` and these limits: (the key itself, its record)."""
        db = connect(self.settings.registry)
        try:
            return create_key(db=db, name=name, scopes="generate", actor="test", limits=limits)
        finally:
            db.dispose()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60)


@pytest.fixture(scope="module")
def system(published: HostingSettings) -> Iterator[System]:
    hosting = on_free_ports(
        published,
        exit_timeout_s=2,
        # one slot, no queue: backpressure and freed slots are visible
        engine={"max_active": 1, "max_queue": 0},
    )
    settings = GatewaySettings(
        registry=hosting.registry,
        triton=hosting.triton,
        engine=hosting.engine,
        port=free_port(),
        jwt_secret=SECRET,
        redis_url=REDIS_URL,
        default_model="gen",
        max_body_bytes=4096,
        rate_requests_capacity=1000,
        deny_patterns=["(?i)ignore previous instructions"],
        reconcile_interval_s=0,  # versions stay as started (a test pins v2)
        drift_interval_s=1,
    )
    prepare(settings.hosting)
    spans = InMemorySpanExporter()
    with server_for(settings.hosting, ["gen"]):
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, span_exporter=spans),
                host="127.0.0.1",
                port=settings.port,
                log_level="warning",
                http="httptools",  # the gateway's own server stack, as it serves
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        running = System(settings, f"http://127.0.0.1:{settings.port}", spans)
        # One request first, as a running service has served many: the first response of a
        # freshly loaded model is slow, and the tokens behind it then leave as one response.
        with running.client() as client:
            warm = {"prompt": "x", "max_tokens": 8, "temperature": 0.5, "stream": True}
            auth = {"Authorization": f"Bearer {running.token('e2e-warm-up')}"}
            assert client.post("/v1/generate", json=warm, headers=auth).status_code == 200
        try:
            yield running
        finally:
            server.should_exit = True
            thread.join(15)


def _events(lines: list[str]) -> list[tuple[str, dict[str, object]]]:
    events, kind = [], "delta"
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
            kind = "delta"
    return events


def test_generate_answers_json_and_streams_the_same_text(system: System) -> None:
    auth = {"Authorization": f"Bearer {system.token('e2e-generate')}", "X-Request-ID": "req-42"}
    body = {"prompt": "def main():\n", "max_tokens": 24, "temperature": 0}
    with system.client() as client:
        answer = client.post("/v1/generate", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert (data["id"], data["model"], data["version"]) == ("req-42", "gen", 1)
        assert data["finish_reason"] in {"length", "eos"}
        assert data["usage"]["completion_tokens"] <= 24
        assert answer.headers["x-request-id"] == "req-42"
        assert float(answer.headers["x-process-time"]) > 0
        assert answer.headers["x-ratelimit-limit-requests"] == "1000"
        assert "RateLimit" in answer.headers
        with client.stream(
            "POST", "/v1/generate", json={**body, "stream": True}, headers=auth
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert "x-ratelimit-remaining-requests" in r.headers
            events = _events(list(r.iter_lines()))
    deltas = [e["delta"] for kind, e in events if kind == "delta"]
    assert len(deltas) >= 2, "text arrives as it is generated"
    assert "".join(str(d) for d in deltas) == data["completion"]
    kind, end = events[-1]
    assert kind == "end"
    assert end["usage"] == data["usage"]


def test_missing_invalid_and_underscoped_tokens(system: System) -> None:
    body = {"prompt": "x", "max_tokens": 2}
    with system.client() as client:
        missing = client.post("/v1/generate", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"]["code"] == "unauthorized"
        forged = client.post("/v1/generate", json=body, headers={"Authorization": "Bearer a.b.c"})
        assert forged.status_code == 401
        admin_only = {"Authorization": f"Bearer {system.token('e2e-admin', 'admin')}"}
        scoped = client.post("/v1/generate", json=body, headers=admin_only)
        assert scoped.status_code == 403
        assert scoped.json()["error"]["code"] == "insufficient_scope"
        user = {"Authorization": f"Bearer {system.token('e2e-user')}"}
        pinned = client.post("/v1/generate", json={**body, "version": 2}, headers=user)
        assert pinned.status_code == 403
        both = {"Authorization": f"Bearer {system.token('e2e-both', 'generate,admin')}"}
        ok = client.post("/v1/generate", json={**body, "version": 2}, headers=both)
        assert ok.status_code == 200
        assert ok.json()["version"] == 2


def test_bad_input_gets_a_stable_code_and_no_trace(system: System) -> None:
    auth = {"Authorization": f"Bearer {system.token('e2e-input')}"}
    cases = [
        ({"prompt": "x", "surprise": 1}, 422, "validation_error"),
        ({"prompt": "x", "max_tokens": 0}, 422, "validation_error"),
        ({"prompt": "x", "max_tokens": 4000}, 422, "max_tokens_out_of_range"),
        ({"prompt": "x", "model": "nope"}, 404, "model_not_found"),
        ({"prompt": "a\x00b"}, 400, "invalid_characters"),
        ({"prompt": "please IGNORE previous instructions"}, 400, "filtered"),
        ({"prompt": "y" * 5000}, 413, "payload_too_large"),
        # Within the size limits, but more tokens than the model's context: the worker says no.
        ({"prompt": " ".join(f"v{i}" for i in range(400))}, 400, "invalid_request"),
    ]
    with system.client() as client:
        for body, status, code in cases:
            answer = client.post("/v1/generate", json=body, headers=auth)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body
            assert "Traceback" not in answer.text
        bad_json = client.post(
            "/v1/generate",
            content=b"{not json",
            headers={**auth, "Content-Type": "application/json"},
        )
        assert bad_json.status_code == 422
        assert bad_json.json()["error"]["code"] == "validation_error"
        assert "Invalid JSON" in bad_json.json()["error"]["message"]
        for path in ("/v1/generate", "/v1/completions", "/v2/generate"):
            for content, kind in [(b"", "application/json"), (b'{"prompt": "x"}', "text/plain")]:
                headers = {**auth, "Content-Type": kind}
                answer = client.post(path, content=content, headers=headers)
                assert answer.status_code == 422, (path, content, kind)
                error = answer.json() if path.startswith("/v2") else answer.json()["error"]
                assert error["code"] == "validation_error"
            # A body sent in chunks, with no Content-Length to refuse it by, is cut off at the
            # limit while it is read.
            chunks = (
                b'{"prompt": "' + b"y" * 1000 + b'"' if i == 0 else b" " * 1000 for i in range(6)
            )
            chunked = client.post(
                path, content=chunks, headers={**auth, "Content-Type": "application/json"}
            )
            assert "content-length" not in chunked.request.headers
            assert chunked.status_code == 413, (path, chunked.text)
            assert "payload_too_large" in chunked.text
            # Who is calling is settled before what they sent.
            nobody = client.post(path, content=b"{not json", headers={"Content-Type": "text/plain"})
            assert nobody.status_code == 401
            assert "www-authenticate" in nobody.headers


def test_hostile_stops_and_form_bodies_are_4xx_and_the_connection_lives_on(
    system: System,
) -> None:
    """Bodies each route's own schema must refuse (they used to pass it and fail later as a
    500, which also reset the keep-alive connection)."""
    auth = {"Authorization": f"Bearer {system.token('e2e-hostile')}"}
    nine = [f"s{i}" for i in range(9)]
    cases = [
        ("/v2/generate", {"inputs": "x", "parameters": {"stop": nine}}),
        ("/v2/generate", {"inputs": "x", "parameters": {"stop": [""]}}),
        ("/v2/generate", {"inputs": ["x", "y"], "parameters": {"stop": ["z" * 65]}}),
        ("/v1/completions", {"model": "gen", "prompt": "x", "stop": nine}),
        ("/v1/completions", {"model": "gen", "prompt": "x", "stop": ""}),
        ("/v1/generate", {"prompt": "x", "stop": nine}),
    ]
    with system.client() as client:
        for path, body in cases:
            answer = client.post(path, json=body, headers=auth)
            assert answer.status_code == 422, (path, body, answer.text)
            error = answer.json() if path.startswith("/v2") else answer.json()["error"]
            assert error["code"] == "validation_error", (path, body)
            assert "stop sequences" in answer.text
        token = client.post(
            "/v1/token",
            content=b"grant_type=client_credentials&client_secret=\xff\xfe",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert token.status_code == 400, token.text
        assert token.json()["error"]["code"] == "invalid_request"
        # The same keep-alive connection goes on serving.
        ok = client.post("/v1/generate", json={"prompt": "x", "max_tokens": 2}, headers=auth)
        assert ok.status_code == 200, ok.text


def test_the_generation_routes_are_described_in_the_openapi_document(system: System) -> None:
    with system.client() as client:
        doc = client.get("/openapi.json").json()
    for path, model in [
        ("/v1/generate", "GenerateRequest"),
        ("/v1/completions", "CompletionRequest"),
        ("/v2/generate", "GenerateV2"),
    ]:
        operation = doc["paths"][path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(f"/{model}"), path
        assert "422" in operation["responses"]
    assert "prompt" in doc["components"]["schemas"]["GenerateRequest"]["properties"]


def test_api_keys_exchange_rate_limit_and_revocation(system: System) -> None:
    secret, info = system.key("e2e", KeyLimits(requests_capacity=2, requests_per_s=0.01))
    with system.client() as client:
        refused = client.post(
            "/v1/token", data={"grant_type": "client_credentials", "client_secret": "tg_x_y"}
        )
        assert refused.status_code == 401
        exchanged = client.post(
            "/v1/token", data={"grant_type": "client_credentials", "client_secret": secret}
        )
        assert exchanged.status_code == 200, exchanged.text
        assert exchanged.json()["expires_in"] <= 900
        auth = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
        body = {"prompt": "x", "max_tokens": 2}
        statuses = [client.post("/v1/generate", json=body, headers=auth) for _ in range(3)]
        assert [s.status_code for s in statuses] == [200, 200, 429]
        limited = statuses[-1]
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        assert limited.headers["ratelimit-policy"].startswith('"requests";q=2')

        env = {**os.environ, **_env(system.settings)}
        revoked = run_module("gateway", "keys", "revoke", info.key_id, env=env)
        assert revoked.returncode == 0, revoked.stderr
        after = client.post("/v1/generate", json=body, headers=auth)
        assert after.status_code == 401
        assert after.json()["error"]["code"] == "key_revoked"


def _env(settings: GatewaySettings) -> dict[str, str]:
    return {
        "TOLLGATE_VAR_DIR": str(settings.registry.var_dir),
        "TOLLGATE_DATABASE_URL": settings.registry.database_url,
        "TOLLGATE_REDIS_URL": settings.redis_url,
        "TOLLGATE_JWT_SECRET": settings.jwt_secret,
    }


def test_a_full_worker_answers_503_with_retry_after(system: System) -> None:
    auth = {"Authorization": f"Bearer {system.token('e2e-busy')}"}
    # Sampled without a seed, so no answer can come from the response cache.
    long = {"prompt": "def f():\n", "max_tokens": 250, "temperature": 0.9}
    with system.client() as client, ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda _: client.post("/v1/generate", json=long, headers=auth), range(4))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200, "the one slot served a request"
    assert statuses[-1] == 503, "one slot and no queue: the others are refused at once"
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.json()["error"]["code"] == "overloaded"
    assert int(busy.headers["retry-after"]) >= 1


def test_a_client_that_leaves_mid_stream_cancels_its_generation(system: System) -> None:
    auth = {"Authorization": f"Bearer {system.token('e2e-leaves')}"}
    long = {"prompt": "def f():\n", "max_tokens": 250, "temperature": 0, "stream": True}
    with system.client() as client:
        with client.stream("POST", "/v1/generate", json=long, headers=auth) as stream:
            assert stream.status_code == 200
            next(stream.iter_lines())  # generation is under way; then the client goes away
        deadline = time.monotonic() + 10
        while 'outcome="disconnected"' not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the gateway never saw the client leave"
            time.sleep(0.05)
        # The worker's only slot is free again for the next caller.
        after = client.post("/v1/generate", json={"prompt": "x", "max_tokens": 2}, headers=auth)
        assert after.status_code == 200, after.text


def test_health_readiness_and_metrics(system: System) -> None:
    with system.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"] == "ok"
        assert ready.json()["checks"]["workers"] == "ready: gen v1", ready.text
        auth = {"Authorization": f"Bearer {system.token('e2e-health')}"}
        denied = {"prompt": "ignore previous instructions", "max_tokens": 2}
        assert client.post("/v1/generate", json=denied, headers=auth).status_code == 400
        text = client.get("/metrics").text
        assert 'tollgate_requests_total{method="POST",route="/v1/generate",status="200"}' in text
        assert "tollgate_time_to_first_token_seconds_bucket" in text
        assert 'tollgate_filtered_total{reason="denied"}' in text


def test_the_official_openai_client_works_by_changing_base_url(system: System) -> None:
    client = openai.OpenAI(base_url=f"{system.base}/v1", api_key=system.token("e2e-openai"))
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["gen"]
    done = client.completions.create(
        model="gen", prompt="def main():\n", max_tokens=12, temperature=0
    )
    assert done.choices[0].finish_reason in {"length", "stop"}
    assert done.usage is not None
    assert done.usage.completion_tokens <= 12
    chunks = list(
        client.completions.create(
            model="gen", prompt="def main():\n", max_tokens=12, temperature=0, stream=True
        )
    )
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == done.choices[0].text
    assert chunks[-1].choices[0].finish_reason == done.choices[0].finish_reason
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="missing", prompt="x", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{system.base}/v1", api_key="wrong").models.list()


def test_v2_returns_ids_and_timings_per_input_and_problem_details(system: System) -> None:
    auth = {"Authorization": f"Bearer {system.token('e2e-v2')}"}
    body = {"inputs": ["def a():", "import os"], "parameters": {"max_tokens": 6, "temperature": 0}}
    with system.client() as client:
        answer = client.post("/v2/generate", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        outputs = answer.json()["outputs"]
        assert len(outputs) == 2
        for output in outputs:
            assert len(output["token_ids"]) == output["usage"]["completion_tokens"] <= 6
            assert set(output["timings"]) == {"queue_ms", "first_token_ms", "total_ms"}
        single = {"inputs": "def a():", "parameters": body["parameters"], "stream": True}
        with client.stream("POST", "/v2/generate", json=single, headers=auth) as r:
            events = _events(list(r.iter_lines()))
        kind, end = events[-1]
        assert kind == "end"
        assert end["output"]["token_ids"] == outputs[0]["token_ids"]  # type: ignore[index]
        problem = client.post("/v2/generate", json={"inputs": "x", "oops": 1}, headers=auth)
        assert problem.status_code == 422
        assert problem.headers["content-type"] == "application/problem+json"
        doc = problem.json()
        assert (doc["status"], doc["code"], doc["instance"]) == (
            422,
            "validation_error",
            "/v2/generate",
        )
        assert doc["type"].endswith("/validation_error")


def test_deterministic_answers_come_from_the_cache_the_second_time(system: System) -> None:
    auth = {"Authorization": f"Bearer {system.token('e2e-cache')}"}
    body = {"prompt": f"# {uuid.uuid4().hex}\ndef f():", "max_tokens": 8, "temperature": 0}
    with system.client() as client:
        first = client.post("/v1/generate", json=body, headers=auth)
        second = client.post("/v1/generate", json=body, headers=auth)
        sampled = client.post("/v1/generate", json={**body, "temperature": 0.8}, headers=auth)
        streamed = client.post("/v1/generate", json={**body, "stream": True}, headers=auth)
        # Another tenant asking the same is answered afresh: a hit would tell it what the
        # first one asked.
        other = {"Authorization": f"Bearer {system.token('e2e-cache-other')}"}
        elsewhere = client.post("/v1/generate", json=body, headers=other)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert elsewhere.headers["x-cache"] == "miss"
    assert elsewhere.json()["completion"] == first.json()["completion"]
    assert second.json()["completion"] == first.json()["completion"]
    assert second.json()["id"] != first.json()["id"]
    assert "x-cache" not in sampled.headers
    assert "x-cache" not in streamed.headers


def test_two_gateway_processes_share_limits_exactly_through_redis(system: System) -> None:
    secret, _ = system.key("shared", KeyLimits(requests_capacity=10, requests_per_s=0.001))
    ports = [free_port(), free_port()]
    env = {
        **os.environ,
        **_env(system.settings),
        "TOLLGATE_TRITON_GRPC_PORT": str(system.settings.triton.grpc_port),
        "TOLLGATE_DEFAULT_MODEL": "gen",
    }
    gateways = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env={**env, "TOLLGATE_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        deadline = time.monotonic() + 60
        for base in bases:
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "a gateway process did not start"
                time.sleep(0.2)
        form = {"grant_type": "client_credentials", "client_secret": secret}
        token = httpx.post(f"{bases[0]}/v1/token", data=form).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        body = {"prompt": "x", "max_tokens": 1}

        def call(i: int) -> int:
            answer = httpx.post(f"{bases[i % 2]}/v1/generate", json=body, headers=auth, timeout=60)
            return answer.status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(call, range(40)))
        # Allowed = capacity + refill x elapsed (0.001/s over a few seconds: < 1), split
        # across both processes. Admitted requests may still find the one worker slot busy.
        admitted = [s for s in statuses if s != 429]
        assert len(admitted) == 10, statuses
        assert set(admitted) <= {200, 503}
    finally:
        for gateway in gateways:
            gateway.terminate()
            gateway.wait(30)


def test_admins_manage_keys_through_the_admin_api(system: System) -> None:
    admin = {"Authorization": f"Bearer {system.token('e2e-ops', 'admin')}"}
    user = {"Authorization": f"Bearer {system.token('e2e-user2')}"}
    with system.client() as client:
        assert client.get("/admin/keys", headers=user).status_code == 403
        made = client.post(
            "/admin/keys", json={"name": "svc", "scopes": ["generate"]}, headers=admin
        )
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["key"].startswith(f"tg_{key['key_id']}_")
        assert key["created_by"] == "e2e-ops"
        listed = client.get("/admin/keys", headers=admin).json()
        assert key["key_id"] in [k["key_id"] for k in listed]
        assert all("key" not in k for k in listed), "secrets are never listed"
        form = {"grant_type": "client_credentials", "client_secret": key["key"]}
        auth = {
            "Authorization": f"Bearer {client.post('/v1/token', data=form).json()['access_token']}"
        }
        assert (
            client.post(
                "/v1/generate", json={"prompt": "x", "max_tokens": 1}, headers=auth
            ).status_code
            == 200
        )
        gone = client.delete(f"/admin/keys/{key['key_id']}", headers=admin)
        assert gone.status_code == 200
        assert gone.json()["revoked_at"]
        refused = client.post("/v1/generate", json={"prompt": "x", "max_tokens": 1}, headers=auth)
        assert refused.status_code == 401
        assert client.delete("/admin/keys/nope", headers=admin).status_code == 404


def _disconnects(text: str) -> float:
    prefix = "tollgate_generations_total{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and 'outcome="disconnected"' in line
    )


def _admissions(text: str) -> float:
    """Generation requests admitted so far (the overhead histogram's count)."""
    prefix = 'tollgate_gateway_overhead_seconds_count{route="generate"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_a_client_that_leaves_a_plain_request_cancels_its_generation(system: System) -> None:
    token = system.token("e2e-leaves-json")
    auth = {"Authorization": f"Bearer {token}"}
    # top_k=1 always takes the likeliest token: from this prompt that runs all 250 tokens
    # (sampling freely ended at the end-of-text token within 20 tokens in 1 of 30 tries),
    # and with a temperature the answer is never served from the response cache. The 250
    # tokens take about 50 ms on a warm two-core machine.
    body = json.dumps(
        {"prompt": "def f():\n", "max_tokens": 250, "temperature": 0.9, "top_k": 1}
    ).encode()
    request = (
        f"POST /v1/generate HTTP/1.1\r\nHost: tollgate\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    address = httpx.URL(system.base)
    with system.client() as client:
        before = _disconnects(client.get("/metrics").text)
        # The client leaves once its request is admitted, so while it generates however slow
        # the machine: leaving earlier would leave a request the gateway had not read yet.
        # Should the answer come first all the same, it tries again.
        for _ in range(5):
            admitted = _admissions(client.get("/metrics").text)
            with socket.create_connection((address.host, address.port)) as raw:
                raw.sendall(request)
                deadline = time.monotonic() + 10
                while _admissions(client.get("/metrics").text) <= admitted:
                    assert time.monotonic() < deadline, "the request was never admitted"
                    time.sleep(0.002)
                raw.setblocking(False)
                try:
                    answered = bool(raw.recv(1))
                except BlockingIOError:
                    answered = False
            if not answered:
                break
        assert not answered, "the answer always came before the client could leave"
        deadline = time.monotonic() + 10
        while _disconnects(client.get("/metrics").text) <= before:
            assert time.monotonic() < deadline, "the gateway kept generating for nobody"
            time.sleep(0.05)
        after = client.post("/v1/generate", json={"prompt": "x", "max_tokens": 2}, headers=auth)
        assert after.status_code == 200, after.text


def test_a_request_is_one_trace_with_spans_for_auth_routing_rate_limit_and_triton(
    system: System,
) -> None:
    system.spans.clear()
    trace_id, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    headers = {
        "Authorization": f"Bearer {system.token('e2e-trace')}",
        "traceparent": f"00-{trace_id}-{caller_span}-01",
        "X-Request-ID": "trace-me",
    }
    with system.client() as client:
        answer = client.post(
            "/v1/generate", json={"prompt": "x", "max_tokens": 4, "stream": True}, headers=headers
        )
    assert answer.status_code == 200
    deadline = time.monotonic() + 5
    while "POST /v1/generate" not in {s.name for s in system.spans.get_finished_spans()}:
        assert time.monotonic() < deadline, "the request's span never ended"
        time.sleep(0.02)
    spans = {s.name: s for s in system.spans.get_finished_spans()}
    root = spans["POST /v1/generate"]
    assert root.parent is not None
    assert f"{root.context.trace_id:032x}" == trace_id, "the caller's trace continues"
    assert f"{root.parent.span_id:016x}" == caller_span
    assert root.attributes is not None
    assert root.attributes["tollgate.request_id"] == "trace-me"
    assert root.attributes["http.response.status_code"] == 200
    for name in ("auth", "route", "rate_limit", "triton"):
        child = spans[name]
        assert child.parent is not None
        assert child.parent.span_id == root.context.span_id, name
        assert child.context.trace_id == root.context.trace_id
    triton = spans["triton"]
    assert triton.attributes is not None
    assert (triton.attributes["tollgate.model"], triton.attributes["tollgate.version"]) == (
        "gen",
        1,
    )
    assert triton.attributes["tollgate.outcome"] in {"length", "eos"}


def _metric_names(expression: str) -> set[str]:
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression))
    return {w for w in words if w.startswith(("tollgate_", "nv_", "process_")) or w == "up"}


def test_every_dashboard_panel_and_alert_finds_its_metrics_in_a_real_prometheus(
    system: System, tmp_path: Path
) -> None:
    prometheus = debian_tool("prometheus", "usr/bin/prometheus")
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(deploy / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "gateway",
                "static_configs": [{"targets": [f"127.0.0.1:{system.settings.port}"]}],
            },
            {
                "job_name": "triton",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{system.settings.triton.metrics_port}"]}
                ],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    server = subprocess.Popen(
        [
            str(prometheus),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        auth = {"Authorization": f"Bearer {system.token('e2e-dashboards')}"}
        with system.client() as client:
            for i in range(12):  # traffic over several scrapes, streamed and not
                body = {"prompt": "def f(", "max_tokens": 8, "stream": i % 2 == 0}
                assert client.post("/v1/generate", json=body, headers=auth).status_code == 200
                time.sleep(0.4)
        dashboard = json.loads((deploy / "grafana" / "dashboards" / "tollgate.json").read_text())
        queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        alerts = [
            rule["expr"]
            for group in yaml.safe_load((deploy / "prometheus" / "alerts.yml").read_text())[
                "groups"
            ]
            for rule in group["rules"]
        ]
        deadline = time.monotonic() + 60
        empty: list[str] = ["(not asked yet)"]
        while empty:
            assert time.monotonic() < deadline, f"no data for: {empty}"
            time.sleep(1)
            empty = []
            for query in queries:
                try:
                    answer = httpx.get(f"{api}/query", params={"query": query}, timeout=5)
                except httpx.TransportError:
                    empty.append(query)
                    continue
                if answer.status_code != 200 or not answer.json()["data"]["result"]:
                    empty.append(query)
            for name in sorted({n for a in alerts for n in _metric_names(a)}):
                try:
                    found = httpx.get(f"{api}/series", params={"match[]": name}, timeout=5)
                except httpx.TransportError:
                    empty.append(name)
                    continue
                if found.status_code != 200 or not found.json()["data"]:
                    empty.append(name)
    finally:
        server.terminate()
        server.wait(30)


def _requests_served(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tollgate_requests_total{") and 'route="/v1/generate"' in line
    )


def test_nginx_balances_streams_and_loses_no_request_when_a_gateway_dies(
    system: System, tmp_path: Path
) -> None:
    nginx = debian_tool("nginx", "usr/sbin/nginx")
    ports = [free_port(), free_port()]
    env = {
        **os.environ,
        **_env(system.settings),
        "TOLLGATE_TRITON_GRPC_PORT": str(system.settings.triton.grpc_port),
        "TOLLGATE_DEFAULT_MODEL": "gen",
        "TOLLGATE_RECONCILE_INTERVAL_S": "0",
        "TOLLGATE_RATE_REQUESTS_CAPACITY": "100000",
    }
    gateways = [
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env={**env, "TOLLGATE_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    listen = free_port()
    conf = (Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "nginx.conf").read_text()
    for old, new in (
        ("gateway-1:8080", f"127.0.0.1:{ports[0]}"),
        ("gateway-2:8080", f"127.0.0.1:{ports[1]}"),
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
        ("/run/nginx.pid", str(tmp_path / "nginx.pid")),
        ("/var/log/nginx/", f"{tmp_path}/"),
        ("worker_processes auto;", "worker_processes 1;\nuser root;"),
        (
            "http {\n",
            "http {\n"
            + "".join(
                f"    {kind}_temp_path {tmp_path / kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
        ),
    ):
        assert old in conf, old
        conf = conf.replace(old, new)
    (tmp_path / "nginx.conf").write_text(conf)
    with (tmp_path / "nginx.stderr").open("wb") as errors:
        proxy = subprocess.Popen(
            [
                str(nginx),
                "-p",
                str(tmp_path),
                "-c",
                str(tmp_path / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    base = f"http://127.0.0.1:{listen}"
    try:
        deadline = time.monotonic() + 60
        for url in [f"http://127.0.0.1:{p}/readyz" for p in ports] + [f"{base}/healthz"]:
            while True:
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proxy.poll() is None, (tmp_path / "nginx.stderr").read_text()
                assert time.monotonic() < deadline, f"{url} did not answer"
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {system.token('e2e-nginx')}"}
        body = {"prompt": "x", "max_tokens": 4, "temperature": 0.7}
        before = [_requests_served(f"http://127.0.0.1:{p}") for p in ports]
        with httpx.Client(base_url=base, timeout=60, headers=auth) as client:
            # One after another: this system's worker has a single slot and no queue.
            statuses = [client.post("/v1/generate", json=body).status_code for _ in range(20)]
            assert statuses == [200] * 20
            after = [_requests_served(f"http://127.0.0.1:{p}") for p in ports]
            assert all(a > b for a, b in zip(after, before, strict=True)), "both replicas served"

            # The request id: the caller's goes through; without one, nginx makes one.
            given = client.post("/v1/generate", json=body, headers={"X-Request-ID": "via-nginx"})
            assert given.headers["x-request-id"] == "via-nginx"
            made = client.post("/v1/generate", json=body)
            assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])

            # A stream passes through whole, as events.
            streamed = client.post("/v1/generate", json={**body, "max_tokens": 40, "stream": True})
            assert streamed.headers["content-type"].startswith("text/event-stream")
            events = _events(streamed.text.splitlines())
            assert events[-1][0] == "end"
            assert sum(kind == "delta" for kind, _ in events) >= 2

            # One replica dies: new requests still all succeed, on the other.
            gateways[0].kill()
            gateways[0].wait(10)
            statuses = [client.post("/v1/generate", json=body).status_code for _ in range(10)]
            assert statuses == [200] * 10
    finally:
        proxy.terminate()
        proxy.wait(10)
        for gateway in gateways:
            if gateway.poll() is None:
                gateway.terminate()
                gateway.wait(30)
