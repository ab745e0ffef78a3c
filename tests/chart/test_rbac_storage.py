"""The controller's RBAC, and the checkpoint store's PersistentVolumeClaim."""

from __future__ import annotations

from chartlib import FULLNAME, NAMESPACE, Manifest, render, volumes_of


def test_controller_role_is_exactly_read_only_pods_and_endpointslices(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    (role,) = manifest.kind("Role")
    assert role["metadata"]["name"] == f"{FULLNAME}-controller"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    ]
    (binding,) = manifest.kind("RoleBinding")
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{FULLNAME}-controller"}
    assert binding["roleRef"] == role_ref
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULLNAME}-controller", "namespace": NAMESPACE}]
    assert not manifest.kind("ClusterRole") and not manifest.kind("ClusterRoleBinding")
    pod = manifest.workload("controller")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULLNAME}-controller"


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    manifest = render(sets=("rbac.create=false",))
    assert not manifest.kind("Role") and not manifest.kind("RoleBinding")


def test_service_account_name_override() -> None:
    manifest = render(sets=("generator.serviceAccount.create=false", "generator.serviceAccount.name=gpu-workers"))
    assert manifest.workload("generator")["spec"]["template"]["spec"]["serviceAccountName"] == "gpu-workers"
    assert manifest.find("ServiceAccount", f"{FULLNAME}-generator") is None


def test_checkpoint_pvc(default: Manifest) -> None:
    pvc = default.get("PersistentVolumeClaim", f"{FULLNAME}-checkpoints")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "storageClassName" not in pvc["spec"]
    for component in ("trainer", "controller", "generator"):
        claim = volumes_of(default.workload(component))["checkpoints"]["persistentVolumeClaim"]["claimName"]
        assert claim == f"{FULLNAME}-checkpoints"


def test_checkpoint_pvc_without_keep_and_with_a_class() -> None:
    manifest = render(sets=("checkpoints.keep=false", "checkpoints.storageClass=filestore-rwx"))
    pvc = manifest.get("PersistentVolumeClaim", f"{FULLNAME}-checkpoints")
    assert "annotations" not in pvc["metadata"]
    assert pvc["spec"]["storageClassName"] == "filestore-rwx"


def test_existing_claim_means_no_pvc(production: Manifest) -> None:
    assert not production.find("PersistentVolumeClaim", f"{FULLNAME}-checkpoints")
    for component in ("trainer", "controller", "generator"):
        claim = volumes_of(production.workload(component))["checkpoints"]["persistentVolumeClaim"]["claimName"]
        assert claim == "semirl-checkpoints-rwx"


def test_cpu_profile_storage(cpu: Manifest) -> None:
    pvc = cpu.get("PersistentVolumeClaim", f"{FULLNAME}-checkpoints")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_redis_persistence_options() -> None:
    manifest = render(sets=("redis.persistence.storageClass=-",))
    (claim,) = manifest.workload("redis")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == ""
    ephemeral = render(sets=("redis.persistence.enabled=false",))
    sts = ephemeral.workload("redis")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert volumes_of(sts)["data"] == {"name": "data", "emptyDir": {}}
