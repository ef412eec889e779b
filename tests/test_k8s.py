"""The Kubernetes manifests validate against the Kubernetes API schemas (kubernetes-validate),
strictly: a misspelt or misplaced field fails, not only a missing one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import GatewaySettings
from tests.settings import env_names
from trainer.config import TrainerSettings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
VERSION = "1.30.0"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append(
                    (f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
                )
    return found


def test_the_deployment_has_every_part_it_promises() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in _documents()}
    assert {
        ("Deployment", "tollgate-gateway"),
        ("HorizontalPodAutoscaler", "tollgate-gateway"),
        ("Service", "tollgate-gateway"),
        ("PodDisruptionBudget", "tollgate-gateway"),
        ("Deployment", "tollgate-triton"),
        ("Service", "tollgate-triton"),
        ("ConfigMap", "tollgate-config"),
        ("Secret", "tollgate-secrets"),
        ("Job", "tollgate-migrate"),
        ("Job", "tollgate-trainer"),
    } <= kinds
    triton = next(d for _, d in _documents() if d["metadata"]["name"] == "tollgate-triton")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"].endswith("/ready")
    # Triton loads at start only a model whose configuration the init container wrote.
    (init,) = triton["spec"]["template"]["spec"]["initContainers"]
    loaded = [a.split("=", 1)[1] for a in container["command"] if a.startswith("--load-model=")]
    assert init["command"][:4] == ["python3", "-m", "hosting", "configure"]
    assert loaded == [init["command"][init["command"].index("--model") + 1]]
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{loaded[0]}/ready"
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in init["volumeMounts"]}
    assert mounts == {"/models": False}, "the init container writes the repository"


@pytest.mark.parametrize(("name", "document"), _documents(), ids=[n for n, _ in _documents()])
def test_each_manifest_validates_strictly(name: str, document: dict[str, Any]) -> None:
    assert name
    kubernetes_validate.validate(document, VERSION, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    _, gateway = next(d for d in _documents() if d[0].endswith("Deployment/tollgate-gateway"))
    broken = {**gateway, "spec": {**gateway["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_every_setting_the_manifests_give_is_a_setting() -> None:
    known = env_names(GatewaySettings, TrainerSettings)
    given: set[str] = set()
    for _, document in _documents():
        if document["kind"] in {"ConfigMap", "Secret"}:
            given |= set(document.get("data") or document.get("stringData") or {})
        pod = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            given |= {e["name"] for e in container.get("env", [])}
    assert given
    assert given <= known, f"not settings: {sorted(given - known)}"


def test_the_trainer_job_publishes_where_triton_reads() -> None:
    by_name = {
        d["metadata"]["name"]: d for _, d in _documents() if d["kind"] in {"Deployment", "Job"}
    }
    trainer = by_name["tollgate-trainer"]["spec"]["template"]["spec"]
    triton = by_name["tollgate-triton"]["spec"]["template"]["spec"]
    claims = {
        pod_name: {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        for pod_name, pod in (("trainer", trainer), ("triton", triton))
    }
    assert claims["trainer"]["models"] == claims["triton"]["models"] == "tollgate-models"
    (container,) = trainer["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"--skip-if-published", "--production-if-none"} <= set(container["command"])
