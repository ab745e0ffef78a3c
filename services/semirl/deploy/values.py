"""The values of the semirl Helm chart (deploy/helm/semirl), as a pydantic model.

The model's defaults ARE the chart's defaults: values.yaml is `ChartValues()` dumped by alias (camelCase), with
comments; tests/chart checks the two agree, and values.schema.json is generated from this model
(`python -m semirl.deploy.schema`). Kubernetes objects that the chart passes through untouched (affinity,
tolerations, securityContext, volumes, ...) are free-form here; Kubernetes validates them.

Every service block (controller, generator, verifier, trainer, reward) has the same shape (`ServiceComponent`);
redis shares the pod-level part (`ComponentBase`) and adds its port, auth and persistence, but has no gRPC,
metrics, GPU or autoscaling keys because an in-chart standalone Redis has none of those.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

# A Kubernetes resource.Quantity written as a string ("500m", "64Gi", "1.5") or a plain number.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
QuantityStr = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
Quantity = Annotated[int | float | QuantityStr, Field(description="a Kubernetes quantity, e.g. 500m, 64Gi, 2")]
OptionalSize = Annotated[
    str, StringConstraints(pattern=r"^(|[0-9]+(\.[0-9]+)?([KMGTPE]i?)?)$"),
    Field(description="a size such as 16Gi; empty = none"),
]
IntOrPercent = int | Annotated[str, StringConstraints(pattern=r"^[0-9]+%$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Dict = dict[str, Any]
StrDict = dict[str, str]
AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]

ACCELERATOR_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# GPU components: the NVIDIA container toolkit in CDI mode writes into the container's root filesystem when it
# creates the container (nvidia-cdi-hook: ldconfig, symlinks), which fails on a read-only one. CPU components keep it.
GPU_CONTAINER_SECURITY_CONTEXT = {"readOnlyRootFilesystem": False}


class Model(BaseModel):
    """Strict (unknown keys are errors, which catches typos in -f files and --set), camelCase aliases."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


# --------------------------------------------------------------------------------------------------- shared parts
class GlobalValues(Model):
    """Helm always injects `global`; umbrella charts may add keys of their own, so extra keys are allowed here."""

    model_config = ConfigDict(extra="allow")

    image_registry: str = Field("", description="overrides every image's registry when set")
    image_pull_secrets: list[str | StrDict] = Field(
        default_factory=list, description="names (or {name: ...}) of Secrets for pulling every image"
    )
    cluster_domain: str = Field("cluster.local", min_length=1, description="the cluster's DNS domain")


class Image(Model):
    registry: str = Field("", description="empty = the repository's default registry; global.imageRegistry wins")
    repository: str = Field(min_length=1)
    tag: str = Field("", description="empty = the chart's appVersion")
    digest: str = Field("", pattern=r"^(|sha256:[a-f0-9]{64})$", description="sha256:...; wins over tag")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class EnvVar(Model):
    """A container EnvVar (name plus value or valueFrom)."""

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = None
    value_from: Dict | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set value or valueFrom, not both")
        return self


class Resources(Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class Probe(Model):
    """Timings of a probe; the chart writes the handler (gRPC health, HTTP path or Redis check) itself."""

    enabled: bool = True
    initial_delay_seconds: int = Field(0, ge=0)
    period_seconds: int = Field(10, ge=1)
    timeout_seconds: int = Field(5, ge=1)
    success_threshold: int = Field(1, ge=1, description="must be 1 for startup and liveness probes")
    failure_threshold: int = Field(3, ge=1)


class Pdb(Model):
    """Rendered only when enabled and the workload can have more than one pod (replicaCount > 1 or autoscaling)."""

    enabled: bool = True
    min_available: IntOrPercent | None = Field(None, description="wins over maxUnavailable when set")
    max_unavailable: IntOrPercent | None = 1

    @model_validator(mode="after")
    def _one_bound(self) -> Pdb:
        if self.enabled and self.min_available is None and self.max_unavailable is None:
            raise ValueError("pdb: set minAvailable or maxUnavailable")
        return self


class ServiceAccount(Model):
    create: bool = True
    name: str = Field("", description="empty = <fullname>-<component>")
    annotations: StrDict = Field(default_factory=dict)
    automount_service_account_token: bool = False


class GrpcPort(Model):
    port: Port = 50051


class TransferPort(Model):
    port: Port = Field(50055, description="rank 0's rendezvous for in-memory weight syncs (SEMIRL_TRANSFER_PORT); "
                                          "generators connect to it")


class MetricsPort(Model):
    port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics port; 0 = off")


class HttpPort(Model):
    port: Port = 8080


class Hpa(Model):
    """A HorizontalPodAutoscaler (autoscaling/v2). Mutually exclusive with keda."""

    enabled: bool = False
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(4, ge=1)
    target_cpu_utilization_percentage: int | None = Field(80, ge=1, alias="targetCPUUtilizationPercentage")
    target_memory_utilization_percentage: int | None = Field(None, ge=1, alias="targetMemoryUtilizationPercentage")
    metrics: list[Dict] = Field(default_factory=list, description="extra autoscaling/v2 MetricSpecs")
    behavior: Dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounds(self) -> Hpa:
        if self.min_replicas > self.max_replicas:
            raise ValueError("hpa: minReplicas > maxReplicas")
        return self


class Keda(Model):
    """A KEDA ScaledObject on the component's Redis stream (redis-streams scaler), rendered only when the cluster
    serves keda.sh/v1alpha1. Triggers: pending entries of the consumer group (work in flight), and, when lagCount
    is set, the group's lag (entries not yet delivered: the backlog; Redis 7+). Mutually exclusive with hpa."""

    enabled: bool = False
    min_replica_count: int = Field(1, ge=0)
    max_replica_count: int = Field(8, ge=1)
    polling_interval: int = Field(15, ge=1)
    cooldown_period: int = Field(300, ge=0)
    initial_cooldown_period: int = Field(0, ge=0)
    idle_replica_count: int | None = Field(None, ge=0)
    pending_entries_count: int = Field(32, ge=1, description="target pending entries per replica")
    lag_count: int | None = Field(64, ge=1, description="target lag per replica; null = no lag trigger")
    activation_lag_count: int = Field(0, ge=0)
    fallback: Dict = Field(default_factory=dict, description="ScaledObject spec.fallback")
    behavior: Dict = Field(default_factory=dict, description="advanced.horizontalPodAutoscalerConfig.behavior")

    @model_validator(mode="after")
    def _bounds(self) -> Keda:
        if self.min_replica_count > self.max_replica_count:
            raise ValueError("keda: minReplicaCount > maxReplicaCount")
        return self


_NOT_BOTH_AUTOSCALERS = {
    "not": {
        "description": "hpa.enabled and keda.enabled are mutually exclusive (never two autoscalers on one workload)",
        "required": ["hpa", "keda"],
        "properties": {
            "hpa": {"required": ["enabled"], "properties": {"enabled": {"const": True}}},
            "keda": {"required": ["enabled"], "properties": {"enabled": {"const": True}}},
        },
    }
}


class Autoscaling(Model):
    model_config = ConfigDict(json_schema_extra=_NOT_BOTH_AUTOSCALERS)

    hpa: Hpa = Field(default_factory=Hpa)
    keda: Keda = Field(default_factory=Keda)

    @model_validator(mode="after")
    def _not_both(self) -> Autoscaling:
        if self.hpa.enabled and self.keda.enabled:
            raise ValueError("autoscaling: hpa.enabled and keda.enabled are mutually exclusive")
        return self


class ServiceMonitor(Model):
    """A prometheus-operator ServiceMonitor on the Service's `metrics` port (needs monitoring.coreos.com/v1)."""

    enabled: bool = False
    interval: str = "30s"
    scrape_timeout: str = "25s"
    honor_labels: bool = False
    additional_labels: StrDict = Field(default_factory=dict)
    relabelings: list[Dict] = Field(default_factory=list)
    metric_relabelings: list[Dict] = Field(default_factory=list)


def _probe(**kwargs: int) -> Any:
    return Field(default_factory=lambda: Probe(**kwargs))


def _resources(requests: dict[str, Any], limits: dict[str, Any]) -> Any:
    return Field(default_factory=lambda: Resources(requests=requests, limits=limits))


def _image(repository: str) -> Any:
    return Field(default_factory=lambda: Image(repository=repository))


def _gpu_security_context() -> Any:
    return Field(
        default_factory=lambda: dict(GPU_CONTAINER_SECURITY_CONTEXT),
        description="merged over the chart's restricted default; readOnlyRootFilesystem is off (CDI-mode toolkits)",
    )


class ComponentBase(Model):
    """The pod-level keys every component has."""

    enabled: bool = True
    replica_count: int = Field(1, ge=0, description="ignored while an autoscaler owns the replica count")
    image: Image
    command: list[str] = Field(default_factory=list, description="empty = the component's own command")
    args: list[str] = Field(default_factory=list)
    extra_args: list[str] = Field(default_factory=list, description="appended to args")
    env: list[EnvVar] = Field(default_factory=list, description="extra EnvVars; a name the chart sets is replaced")
    env_from: list[Dict] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    node_selector: StrDict = Field(default_factory=dict)
    tolerations: list[Dict] = Field(default_factory=list)
    affinity: Dict = Field(default_factory=dict)
    topology_spread_constraints: list[Dict] = Field(default_factory=list)
    priority_class_name: str = ""
    runtime_class_name: str = ""
    termination_grace_period_seconds: int | None = Field(None, ge=0)
    update_strategy: Dict = Field(default_factory=dict, description="Deployment strategy / StatefulSet updateStrategy")
    pod_annotations: StrDict = Field(default_factory=dict)
    pod_labels: StrDict = Field(default_factory=dict)
    pod_security_context: Dict = Field(default_factory=dict, description="merged over the chart's hardened default")
    container_security_context: Dict = Field(
        default_factory=dict, description="merged over the chart's restricted default"
    )
    startup_probe: Probe = _probe(period_seconds=5, failure_threshold=60)
    readiness_probe: Probe = _probe(period_seconds=10, failure_threshold=3)
    liveness_probe: Probe = _probe(period_seconds=20, failure_threshold=3)
    pdb: Pdb = Field(default_factory=Pdb)
    service_account: ServiceAccount = Field(default_factory=ServiceAccount)
    extra_volumes: list[Dict] = Field(default_factory=list)
    extra_volume_mounts: list[Dict] = Field(default_factory=list)
    extra_init_containers: list[Dict] = Field(
        default_factory=list, description="init containers; the restricted securityContext is merged under theirs"
    )


class ServiceComponent(ComponentBase):
    """One semirl service: a gRPC server with grpc.health.v1 (liveness/readiness) and Prometheus metrics."""

    grpc: GrpcPort = Field(default_factory=GrpcPort)
    metrics: MetricsPort = Field(default_factory=MetricsPort)
    gpus: int = Field(0, ge=0, description="accelerators per pod, written into requests AND limits; 0 = none")
    shm_size: OptionalSize = Field("", description="memory-backed /dev/shm emptyDir size; empty = no /dev/shm")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    service_monitor: ServiceMonitor = Field(default_factory=ServiceMonitor)


# ----------------------------------------------------------------------------------------------------- components
class ControllerAuth(Model):
    existing_secret: str = Field("", description="Secret holding the API token; empty = a chart-made random one")
    existing_secret_key: str = Field("api-token", min_length=1)


class SecretKey(Model):
    existing_secret: str = Field("", description="a Secret of yours; empty = none")
    key: str = Field(min_length=1)


class MlflowTracking(Model):
    tracking_uri: str = Field("", description="SEMIRL_MLFLOW_TRACKING_URI, e.g. http://mlflow.mlflow:5000; "
                                              "empty = off")
    experiment: str = Field("semirl", min_length=1)


class WandbTracking(Model):
    mode: Literal["", "online", "offline"] = Field("", description="online (needs apiKey) or offline (files under "
                                                                   "<store>/tracking, for `wandb sync`); empty = off")
    project: str = Field("semirl", min_length=1)
    api_key: SecretKey = Field(default_factory=lambda: SecretKey(key="api-key"), description="WANDB_API_KEY")


class S3Credentials(Model):
    existing_secret: str = Field("", description="a Secret with the access key pair; empty = the pod's own "
                                                 "identity (IRSA, workload identity)")
    access_key_id_key: str = Field("access-key-id", min_length=1)
    secret_access_key_key: str = Field("secret-access-key", min_length=1)


class ArtifactExport(Model):
    uri: str = Field("", pattern=r"^(|s3://[^/]+(/.*)?)$", description="s3://bucket/prefix for each finished "
                                                                       "run's final/ and best/; empty = off")
    s3_endpoint_url: str = Field("", description="an S3-compatible store's endpoint (MinIO, R2, GCS interop)")
    credentials: S3Credentials = Field(default_factory=S3Credentials)


class Tracking(Model):
    """Run tracking by the controller (controller/tracking.py): step metrics, evaluations, spec and outcome to MLflow
    and/or W&B, final/ and best/ to an S3-compatible store. Its egress must be allowed (networkPolicy.extraEgress)."""

    mlflow: MlflowTracking = Field(default_factory=MlflowTracking)
    wandb: WandbTracking = Field(default_factory=WandbTracking)
    artifacts: ArtifactExport = Field(default_factory=ArtifactExport)
    poll_seconds: float = Field(10, gt=0, le=3600)


class Controller(ServiceComponent):
    replica_count: int = Field(1, ge=0, le=1, description="the controller is the single writer: 0 or 1")
    image: Image = _image("semirl/semirl-cpu")
    http: HttpPort = Field(default_factory=HttpPort)
    auth: ControllerAuth = Field(default_factory=ControllerAuth)
    tracking: Tracking = Field(default_factory=Tracking)
    reload_timeout_seconds: int = Field(
        600, ge=1, le=86400,
        description="how long the controller waits for one generator's Reload (verify + load a checkpoint); "
                    "sized for re-hashing a 16-32 GB checkpoint over NFS (docs/deploy.md)",
    )
    transfer_timeout_seconds: int = Field(
        120, ge=1, le=3600,
        description="how long a generator of an in-memory weight sync may take before it is dropped and loads the "
                    "export instead (SEMIRL_TRANSFER_TIMEOUT_S; 16 GB at 8B is seconds)",
    )
    resources: Resources = _resources({"cpu": "500m", "memory": "1Gi"}, {"memory": "2Gi"})
    update_strategy: Dict = Field(default_factory=lambda: {"type": "Recreate"})
    startup_probe: Probe = _probe(period_seconds=5, failure_threshold=30)
    service_account: ServiceAccount = Field(
        default_factory=lambda: ServiceAccount(automount_service_account_token=True)
    )
    pdb: Pdb = Field(default_factory=lambda: Pdb(enabled=False))


class Vllm(Model):
    """vLLM engine settings of every generator pod (SEMIRL_VLLM_* -> EngineConfig -> vllm.LLM). The tensor-parallel
    size is not a setting: it is the pod's `gpus` (one engine over all of the pod's GPUs)."""

    enforce_eager: bool = Field(False, description="true = no CUDA graphs (much slower decoding on GPU; the CPU stack)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of each GPU's memory vLLM may use")
    max_num_seqs: int | None = Field(None, ge=1, description="sequences per engine step; null = vLLM's default")
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of shared prompt prefixes")
    engine_args: Dict = Field(
        default_factory=dict, description="more vllm.LLM keyword arguments (JSON values), applied last"
    )


class ClaimVolume(Model):
    """A volume on a PersistentVolumeClaim: one the chart makes, or `existingClaim`."""

    enabled: bool = False
    existing_claim: str = Field("", description="a pre-provisioned claim; empty = the chart makes one")
    storage_class: str = ""
    access_modes: list[AccessMode] = Field(default_factory=lambda: ["ReadWriteMany"], min_length=1)
    size: QuantityStr = "50Gi"
    mount_path: str = Field("/var/cache/semirl", pattern=r"^/")


class CompileCache(ClaimVolume):
    """A persistent volume for vLLM's torch.compile cache, FlashInfer's JIT kernels, Triton's and Inductor's
    caches (VLLM_CACHE_ROOT, FLASHINFER_WORKSPACE_BASE, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR under mountPath):
    in the default emptyDir every generator restart rebuilds them, minutes at 8B. One claim shared by every
    generator (the caches are keyed by model, config and GPU; a new entry is written whole)."""

    existing_claim: str = Field("", description="a claim to use; empty = the chart makes <fullname>-compile-cache")


class Generator(ServiceComponent):
    image: Image = _image("semirl/semirl-generator")
    compile_cache: CompileCache = Field(default_factory=CompileCache)
    gpus: int = Field(1, ge=0, description="GPUs per pod = vLLM's tensor_parallel_size (0 = CPU, size 1)")
    shm_size: OptionalSize = "16Gi"
    model: str = Field("", description="model the generator loads at start; empty = the run's policy")
    dtype: str = "bfloat16"
    max_model_len: int = Field(4096, ge=1)
    batch_size: int = Field(64, ge=1)
    vllm: Vllm = Field(default_factory=Vllm)
    container_security_context: Dict = _gpu_security_context()
    resources: Resources = _resources({"cpu": "8", "memory": "64Gi"}, {"memory": "96Gi"})
    tolerations: list[Dict] = Field(default_factory=lambda: [dict(ACCELERATOR_TOLERATION)])
    termination_grace_period_seconds: int | None = Field(60, ge=0)
    update_strategy: Dict = Field(
        default_factory=lambda: {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    )
    startup_probe: Probe = _probe(period_seconds=10, failure_threshold=120)
    liveness_probe: Probe = _probe(period_seconds=20, timeout_seconds=10, failure_threshold=6)
    autoscaling: Autoscaling = Field(
        default_factory=lambda: Autoscaling(keda=Keda(cooldown_period=900, pending_entries_count=64, lag_count=128))
    )


class Verifier(ServiceComponent):
    image: Image = _image("semirl/semirl-cpu")
    resources: Resources = _resources({"cpu": "2", "memory": "4Gi"}, {"memory": "8Gi"})
    autoscaling: Autoscaling = Field(
        default_factory=lambda: Autoscaling(
            keda=Keda(max_replica_count=16, cooldown_period=120, pending_entries_count=64, lag_count=128)
        )
    )


class Rdma(Model):
    enabled: bool = False
    resource_name: str = Field("rdma/rdma_shared_device_a", min_length=1,
                               description="the RDMA device plugin's extended resource (Mellanox shared device "
                                           "plugin; SR-IOV: e.g. nvidia.com/rdma_vf)")
    count: int = Field(1, ge=1, description="devices per pod, in requests and limits")


class Fabric(Model):
    """The trainer's multi-node interconnect: NCCL over InfiniBand / RoCE instead of TCP sockets (docs/deploy.md,
    "multi-node fabric"). Presets: ci/fabric-infiniband-values.yaml, ci/fabric-roce-multus-values.yaml."""

    rdma: Rdma = Field(default_factory=Rdma)
    ipc_lock: bool = Field(False, description="add the IPC_LOCK capability (RDMA memory registration pins pages)")
    host_network: bool = Field(False, description="the node's network namespace (dnsPolicy "
                                                   "ClusterFirstWithHostNet): NICs without a CNI for RDMA")
    networks: str = Field("", description="Multus secondary networks: the k8s.v1.cni.cncf.io/networks annotation")
    nccl_socket_ifname: str = Field("", description="NCCL_SOCKET_IFNAME: NCCL's bootstrap and socket interface")
    gloo_socket_ifname: str = Field("", description="GLOO_SOCKET_IFNAME: the control group's and CPU syncs' one")
    nccl_ib_hca: str = Field("", description="NCCL_IB_HCA: the HCAs to use (e.g. mlx5)")
    nccl_net_plugin: str = Field("", description="NCCL_NET_PLUGIN: a network plugin in the image (build arg)")
    nccl_env: StrDict = Field(default_factory=dict, description="more NCCL_* settings (e.g. NCCL_IB_GID_INDEX)")


class Kueue(Model):
    queue_name: str = Field("", description="Kueue LocalQueue: the trainer's pods are admitted together as one "
                                            "group (gang scheduling); empty = no Kueue")


class Trainer(ServiceComponent):
    image: Image = _image("semirl/semirl-trainer")
    transfer: TransferPort = Field(default_factory=TransferPort)
    fabric: Fabric = Field(default_factory=Fabric)
    kueue: Kueue = Field(default_factory=Kueue)
    gpus: int = Field(1, ge=0)
    container_security_context: Dict = _gpu_security_context()
    shm_size: OptionalSize = "32Gi"
    resources: Resources = _resources({"cpu": "8", "memory": "64Gi"}, {"memory": "128Gi"})
    tolerations: list[Dict] = Field(default_factory=lambda: [dict(ACCELERATOR_TOLERATION)])
    termination_grace_period_seconds: int | None = Field(300, ge=0)
    startup_probe: Probe = _probe(period_seconds=10, failure_threshold=120)
    liveness_probe: Probe = _probe(period_seconds=20, timeout_seconds=10, failure_threshold=6)
    pdb: Pdb = Field(default_factory=lambda: Pdb(enabled=False))


class Reward(ServiceComponent):
    """The reward-model service (`python -m semirl.reward`): an HF sequence classifier that scores the samples of
    semirl:stream:to_reward (consumer group `rewards`). Off by default; `model` is required when it is on."""

    enabled: bool = Field(False, description="run the reward-model service (needs `model`)")
    image: Image = _image("semirl/semirl-reward")
    model: str = Field(
        "", description="the reward model's checkpoint directory as the pod sees it, on the read-only checkpoint "
                        "claim (e.g. /checkpoints/models/Athene-RM-8B); required when enabled (SEMIRL_REWARD_MODEL)",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="dtype the model is loaded in (SEMIRL_REWARD_DTYPE)"
    )
    max_length: int = Field(
        4096, ge=1, description="tokens the model reads per input; longer inputs lose the prompt's left "
                                "(SEMIRL_REWARD_MAX_LENGTH)",
    )
    score_token: str = Field(
        "", description="a token appended to every input whose output is the score (Athene-RM-8B: "
                        "<|reserved_special_token_1|>); empty = the last token (SEMIRL_REWARD_SCORE_TOKEN)",
    )
    prompt_format: Literal["chat", "raw"] = Field(
        "chat", description="chat = the reward model's chat template over prompt and response; raw = plain "
                            "text (SEMIRL_REWARD_PROMPT_FORMAT)",
    )
    max_batch_tokens: int = Field(
        16384, ge=1, description="tokens scored per forward pass; inputs are batched up to it "
                                 "(SEMIRL_REWARD_MAX_BATCH_TOKENS)",
    )
    gpus: int = Field(1, ge=0)
    container_security_context: Dict = _gpu_security_context()
    shm_size: OptionalSize = "8Gi"
    resources: Resources = _resources({"cpu": "4", "memory": "32Gi"}, {"memory": "48Gi"})
    tolerations: list[Dict] = Field(default_factory=lambda: [dict(ACCELERATOR_TOLERATION)])
    startup_probe: Probe = _probe(period_seconds=10, failure_threshold=120)
    liveness_probe: Probe = _probe(period_seconds=20, timeout_seconds=10, failure_threshold=6)
    autoscaling: Autoscaling = Field(
        default_factory=lambda: Autoscaling(keda=Keda(max_replica_count=4, cooldown_period=900))
    )

    @model_validator(mode="after")
    def _needs_a_model(self) -> Reward:
        if self.enabled and not self.model:
            raise ValueError("reward.model is required when reward.enabled is true")
        return self


class RedisAuth(Model):
    enabled: bool = True
    existing_secret: str = Field("", description="empty = a chart-made Secret with a random password")
    existing_secret_password_key: str = Field("redis-password", min_length=1)


class RedisPersistence(Model):
    enabled: bool = Field(True, description="false = an emptyDir (data lost with the pod)")
    storage_class: str = ""
    access_modes: list[AccessMode] = Field(default_factory=lambda: ["ReadWriteOnce"], min_length=1)
    size: QuantityStr = "8Gi"


class Redis(ComponentBase):
    """The in-chart Redis: one StatefulSet pod of the official image, append-only file on a PVC."""

    replica_count: int = Field(1, ge=0, le=1, description="standalone: 0 or 1")
    image: Image = Field(default_factory=lambda: Image(repository="redis", tag="7.4.2-bookworm"))
    port: Port = 6379
    auth: RedisAuth = Field(default_factory=RedisAuth)
    persistence: RedisPersistence = Field(default_factory=RedisPersistence)
    resources: Resources = _resources({"cpu": "250m", "memory": "512Mi"}, {"memory": "2Gi"})
    pod_security_context: Dict = Field(
        default_factory=lambda: {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999}
    )
    startup_probe: Probe = _probe(period_seconds=5, failure_threshold=60)
    pdb: Pdb = Field(default_factory=lambda: Pdb(enabled=False))


class ExternalRedis(Model):
    """Used when redis.enabled is false."""

    host: str = ""
    port: Port = 6379
    existing_secret: str = Field("", description="Secret with the password; empty = no password")
    existing_secret_password_key: str = Field("redis-password", min_length=1)


# ------------------------------------------------------------------------------------------------------- the rest
class DriverGate(Model):
    """Schedules pods with GPUs only on nodes whose NVIDIA driver can run the images' CUDA 13 (driver >= 580), by a
    required nodeAffinity on the driver label of NVIDIA GPU feature discovery (GPU Operator / device plugin)."""

    enabled: bool = True
    node_label: str = Field(
        "nvidia.com/cuda.driver-version.major", min_length=1, description="node label holding the driver's major"
    )
    min_major: int = Field(580, ge=1, description="lowest driver major version allowed (CUDA 13 needs 580)")


class Accelerator(Model):
    resource_name: str = Field("nvidia.com/gpu", min_length=1, description="extended resource of one accelerator")
    driver_gate: DriverGate = Field(default_factory=DriverGate)
    cpu_pods_tolerate_gpu_nodes: bool = Field(
        False, description="give the CPU pods (controller, verifier, Redis, the staging Jobs) the GPU nodes' "
                           "toleration too: a cluster of tainted GPU nodes only would leave them Pending",
    )


class PriorityClasses(Model):
    """Two PriorityClasses the chart makes when `create`: <fullname>-critical (trainer, controller, Redis) and
    <fullname>-workers (generators, verifiers, reward), each the default of its components' priorityClassName, so a
    restarting trainer pod preempts workers to get its GPUs back instead of waiting Pending."""

    create: bool = False
    critical_value: int = Field(100000, ge=-2147483648, le=1000000000)
    workers_value: int = Field(10000, ge=-2147483648, le=1000000000)
    preemption_policy: Literal["PreemptLowerPriority", "Never"] = "PreemptLowerPriority"


class Checkpoints(ClaimVolume):
    """The shared checkpoint store: RW in trainer and controller, read-only in generator and reward."""

    enabled: bool = True
    existing_claim: str = Field("", description="a pre-provisioned claim (NFS, Filestore, EFS, CephFS); no PVC made")
    size: QuantityStr = "500Gi"
    mount_path: str = Field("/checkpoints", pattern=r"^/")
    keep: bool = Field(True, description="helm.sh/resource-policy: keep, so uninstall never deletes checkpoints")


class HfToken(Model):
    existing_secret: str = Field("", description="Secret with a Hugging Face token (HF_TOKEN); empty = anonymous")
    key: str = Field("token", min_length=1)


class StagedModel(Model):
    """A second model the staging Job downloads: the reward model of a reward-model run (Athene-RM-8B)."""

    repo: str = Field("", description="Hugging Face model id; empty = none (e.g. Nexusflow/Athene-RM-8B)")
    revision: str = ""
    path: str = Field("models/Athene-RM-8B", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
                      description="target directory, relative to checkpoints.mountPath")
    ignore_patterns: list[str] = Field(default_factory=list)


class PreparedDataset(Model):
    """One `python -m semirl.data` run of the data-preparation Job (its flags; paths relative to the claim)."""

    source: Literal["numinamath", "math500", "amc23", "gsm8k", "wildchat"]
    input: str = Field(min_length=1, description="hub:<owner>/<dataset>, or a file on the claim (relative path)")
    split: str = "train"
    out: str = Field(pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\.jsonl$", description="relative to the claim")
    exclude: list[str] = Field(default_factory=list, description="evaluation sets (relative paths) to drop")
    limit: int | None = Field(None, ge=1)


def _paper_datasets() -> list[PreparedDataset]:
    return [
        PreparedDataset(source="math500", input="hub:HuggingFaceH4/MATH-500", split="test", out="data/math500.jsonl"),
        PreparedDataset(source="amc23", input="hub:math-ai/amc23", split="test", out="data/amc23.jsonl"),
        PreparedDataset(source="numinamath", input="hub:AI-MO/NuminaMath-CoT", split="train",
                        out="data/numinamath.jsonl", exclude=["data/math500.jsonl", "data/amc23.jsonl"]),
    ]


class JobPod(Model):
    """Where and how one of the chart's Jobs runs: the keys every Job's values share."""

    hf_token: HfToken = Field(default_factory=HfToken)
    image: Image | None = None
    backoff_limit: int = Field(2, ge=0)
    resources: Resources = Field(default_factory=Resources)
    node_selector: StrDict = Field(default_factory=dict)
    tolerations: list[Dict] = Field(default_factory=list)
    affinity: Dict = Field(default_factory=dict)


class DataPreparation(JobPod):
    """An optional Job that writes the runs' problem JSONL onto the claim with `python -m semirl.data`, one init
    container per dataset in order (evaluation sets first, so the training set can exclude them); any semirl image
    runs it (pyarrow and huggingface_hub are base dependencies). The default is the paper's: MATH-500 and AMC23 to
    evaluate, NuminaMath-CoT to train on, minus both."""

    enabled: bool = False
    datasets: list[PreparedDataset] = Field(default_factory=_paper_datasets, min_length=1)
    image: Image | None = Field(None, description="null = the controller's image (semirl-cpu)")
    resources: Resources = _resources({"cpu": "2", "memory": "8Gi"}, {"memory": "16Gi"})


class ModelStaging(JobPod):
    """An optional Job that prepares the checkpoint claim and downloads the seed model into it: an init container
    running as root chowns the store's top directories to uid 10001 (the chart's one root container), then uid
    10001 runs huggingface_hub's snapshot_download into <checkpoints.mountPath>/<path>."""

    enabled: bool = False
    repo: str = Field("meta-llama/Llama-3.1-8B-Instruct", min_length=1, description="Hugging Face model id")
    revision: str = Field("", description="branch, tag or commit; empty = the default branch")
    path: str = Field(
        "models/Llama-3.1-8B-Instruct", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="target directory, relative to checkpoints.mountPath",
    )
    ignore_patterns: list[str] = Field(
        default_factory=lambda: ["original/*"], description="not downloaded (original/: Meta's consolidated weights)"
    )
    fix_ownership: bool = Field(
        True, description="root init container: chown the store root, models/ and data/ to 10001:10001"
    )
    image: Image | None = Field(None, description="null = the generator's image (it has huggingface_hub)")
    backoff_limit: int = Field(3, ge=0)
    resources: Resources = _resources({"cpu": "2", "memory": "4Gi"}, {"memory": "8Gi"})
    reward_model: StagedModel = Field(default_factory=lambda: StagedModel())
    wait_in_pods: bool = Field(
        True, description="generator, trainer and reward pods wait (init container, their own image) for the "
                          "staged model's .semirl-staged marker before they start",
    )


class NetworkPolicyMetrics(Model):
    namespace_selector: Dict = Field(
        default_factory=lambda: {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        description="namespaces allowed to scrape the metrics ports ({} = every namespace)",
    )
    pod_selector: Dict = Field(default_factory=dict)


class NetworkPolicyKeda(Model):
    namespace_selector: Dict = Field(
        default_factory=lambda: {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
        description="where KEDA's operator runs; it reads the streams from Redis when a ScaledObject is on",
    )


class NetworkPolicyKubeApi(Model):
    ports: list[Port] = Field(default_factory=lambda: [443, 6443])


class NetworkPolicy(Model):
    enabled: bool = True
    allow_external: bool = Field(
        True, description="controller REST port from anywhere; false = only pods labelled <fullname>-client=true"
    )
    allow_external_egress: bool = Field(True, description="false = DNS, the release's pods and the API server only")
    metrics: NetworkPolicyMetrics = Field(default_factory=NetworkPolicyMetrics)
    keda: NetworkPolicyKeda = Field(default_factory=NetworkPolicyKeda)
    kube_api_server: NetworkPolicyKubeApi = Field(
        default_factory=NetworkPolicyKubeApi, alias="kubeAPIServer",
        description="egress ports of the API server for the controller in the tight egress mode",
    )
    extra_ingress: list[Dict] = Field(default_factory=list, description="NetworkPolicyIngressRules added to all")
    extra_egress: list[Dict] = Field(default_factory=list, description="NetworkPolicyEgressRules (tight mode)")


LABEL_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class GrafanaDashboard(Model):
    """A ConfigMap holding the chart's Grafana dashboard (dashboards/semirl.json) for Grafana's dashboard sidecar,
    which loads every ConfigMap carrying its label (kube-prometheus-stack: grafana_dashboard="1", searched in every
    namespace). It shows what the ServiceMonitors scrape, so it is off, like them, until monitoring is set up."""

    enabled: bool = Field(False, description="render the dashboard's ConfigMap")
    namespace: str = Field(
        "", max_length=63, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        description="namespace of the ConfigMap; empty = the release's (a sidecar that searches only Grafana's own "
                    "namespace needs that one)",
    )
    label: str = Field(
        "grafana_dashboard", pattern=LABEL_NAME_PATTERN,
        description="label the sidecar selects (kube-prometheus-stack: grafana.sidecar.dashboards.label)",
    )
    label_value: Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)] | int = Field(
        "1", description="its value (grafana.sidecar.dashboards.labelValue)"
    )
    additional_labels: StrDict = Field(default_factory=dict)
    annotations: StrDict = Field(
        default_factory=dict,
        description="e.g. grafana_folder: semirl, for a sidecar whose folderAnnotation is grafana_folder",
    )


class Rbac(Model):
    create: bool = Field(True, description="the controller's Role: get/list/watch pods and endpointslices")


class Tests(Model):
    enabled: bool = Field(True, description="render the `helm test` pod")


class ChartValues(Model):
    global_: GlobalValues = Field(default_factory=GlobalValues, alias="global")
    name_override: str = ""
    fullname_override: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    accelerator: Accelerator = Field(default_factory=Accelerator)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    model_staging: ModelStaging = Field(default_factory=ModelStaging)
    data_preparation: DataPreparation = Field(default_factory=DataPreparation)
    priority_classes: PriorityClasses = Field(default_factory=PriorityClasses)
    controller: Controller = Field(default_factory=Controller)
    generator: Generator = Field(default_factory=Generator)
    verifier: Verifier = Field(default_factory=Verifier)
    trainer: Trainer = Field(default_factory=Trainer)
    reward: Reward = Field(default_factory=Reward)
    redis: Redis = Field(default_factory=Redis)
    external_redis: ExternalRedis = Field(default_factory=ExternalRedis)
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy)
    rbac: Rbac = Field(default_factory=Rbac)
    grafana_dashboard: GrafanaDashboard = Field(default_factory=GrafanaDashboard)
    tests: Tests = Field(default_factory=Tests)

    @model_validator(mode="after")
    def _redis_somewhere(self) -> ChartValues:
        if not self.redis.enabled and not self.external_redis.host:
            raise ValueError("externalRedis.host is required when redis.enabled is false")
        return self


COMPONENTS = ("controller", "generator", "verifier", "trainer", "reward")
"""The semirl services, in the order the chart renders them (redis is separate)."""


def default_values() -> dict[str, Any]:
    """The chart's defaults as values.yaml spells them."""
    return ChartValues().model_dump(mode="json", by_alias=True)
