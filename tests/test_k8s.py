"""The Kubernetes manifests validate against the Kubernetes API schemas (kubernetes-validate),
strictly: a misspelt or misplaced field fails, not only a missing one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

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
    } <= kinds
    triton = next(d for _, d in _documents() if d["metadata"]["name"] == "tollgate-triton")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"].endswith("/ready")


@pytest.mark.parametrize(("name", "document"), _documents(), ids=[n for n, _ in _documents()])
def test_each_manifest_validates_strictly(name: str, document: dict[str, Any]) -> None:
    assert name
    kubernetes_validate.validate(document, VERSION, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    _, gateway = next(d for d in _documents() if d[0].endswith("Deployment/tollgate-gateway"))
    broken = {**gateway, "spec": {**gateway["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)
