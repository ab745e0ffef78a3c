"""NOTES.txt: how to reach the controller, authenticate, submit and watch a run, and scale generators."""

from __future__ import annotations

from chartlib import CHART, NAMESPACE, RELEASE, helm


def notes(*args: str) -> str:
    result = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args)
    return result.stdout.split("NOTES:", 1)[1]


def test_notes() -> None:
    text = notes()
    assert f"kubectl -n {NAMESPACE} port-forward svc/rel-semirl-controller 8080:8080" in text
    assert "get secret rel-semirl-api-token -o jsonpath='{.data.api-token}' | base64 -d" in text
    assert ('curl -H "Authorization: Bearer $TOKEN" -H \'Content-Type: application/yaml\' \\\n'
            "        --data-binary @spec.yaml http://127.0.0.1:8080/v1/runs") in text
    assert "http://127.0.0.1:8080/v1/runs/<run-id>" in text
    assert f"kubectl -n {NAMESPACE} scale deployment/rel-semirl-generator --replicas=N" in text
    assert f"helm test {RELEASE}" in text


def test_notes_with_keda_but_no_crd() -> None:
    text = notes("--set", "generator.autoscaling.keda.enabled=true")
    assert "generator: scaled by KEDA" in text and "no ScaledObject was created" in text
    assert "scale deployment/rel-semirl-generator" not in text


def test_notes_warn_when_rwx_comes_from_the_default_class() -> None:
    assert "DEFAULT storage class" in notes()
    assert "DEFAULT storage class" not in notes("--set", "checkpoints.storageClass=nfs-rwx")
    assert "DEFAULT storage class" not in notes("--set", "checkpoints.existingClaim=shared-ckpt")
