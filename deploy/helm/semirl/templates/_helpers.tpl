{{/* ============================================================ names */}}

{{- define "semirl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name. Truncated to 40 characters so that every derived name fits the 63-character DNS
label limit: the longest is "<fullname>-trainer-headless", and a trainer pod's hostname "<fullname>-trainer-N".
*/}}
{{- define "semirl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>": every object of a component. Arg: dict root component */}}
{{- define "semirl.componentName" -}}
{{- printf "%s-%s" (include "semirl.fullname" .root) .component -}}
{{- end -}}

{{- define "semirl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* ============================================================ labels */}}

{{/* Labels of every object. Arg: dict root component */}}
{{- define "semirl.labels" -}}
helm.sh/chart: {{ include "semirl.chart" .root }}
{{ include "semirl.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: semirl
{{- end -}}

{{/* Selector of one component: name + instance + component (never overlapping between components). */}}
{{- define "semirl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "semirl.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every pod of this release (NetworkPolicy peers). */}}
{{- define "semirl.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "semirl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* ============================================================ images */}}

{{/* [registry/]repository(:tag | @digest). Arg: dict root image */}}
{{- define "semirl.image" -}}
{{- $registry := .root.Values.global.imageRegistry | default .image.registry -}}
{{- $repository := .image.repository -}}
{{- if $registry -}}{{- $repository = printf "%s/%s" $registry $repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- /* skaffold passes "<tag>@<digest>"; an image it did not push has no digest: drop the dangling "@". */ -}}
{{- printf "%s:%s" $repository (toString (.image.tag | default .root.Chart.AppVersion) | trimSuffix "@") -}}
{{- end -}}
{{- end -}}

{{- define "semirl.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  {{- if kindIs "map" . }}
  - name: {{ .name }}
  {{- else }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ============================================================ service accounts */}}

{{/* Arg: dict root component */}}
{{- define "semirl.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "semirl.componentName" .) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* ============================================================ security */}}

{{/* Hardened pod securityContext (images run as USER 10001:10001), merged under the component's own. */}}
{{- define "semirl.podSecurityContext" -}}
{{- $default := dict "runAsNonRoot" true "runAsUser" 10001 "runAsGroup" 10001 "fsGroup" 10001 "fsGroupChangePolicy" "OnRootMismatch" "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (mergeOverwrite $default (deepCopy (. | default dict))) -}}
{{- end -}}

{{/* Restricted container securityContext (Pod Security Standard "restricted"), merged under the component's own. */}}
{{- define "semirl.containerSecurityContext" -}}
{{- $default := dict "runAsNonRoot" true "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "privileged" false "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (mergeOverwrite $default (deepCopy (. | default dict))) -}}
{{- end -}}

{{/* ============================================================ resources */}}

{{/* The component's resources with `gpus` written into BOTH requests and limits. Arg: dict root c */}}
{{- define "semirl.resources" -}}
{{- $res := deepCopy (.c.resources | default dict) -}}
{{- $gpus := int (.c.gpus | default 0) -}}
{{- if gt $gpus 0 -}}
{{- $accel := .root.Values.accelerator.resourceName -}}
{{- $requests := get $res "requests" | default dict -}}
{{- $limits := get $res "limits" | default dict -}}
{{- $_ := set $requests $accel $gpus -}}
{{- $_ := set $limits $accel $gpus -}}
{{- $_ := set $res "requests" $requests -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- $rdma := dig "fabric" "rdma" dict .c -}}
{{- if $rdma.enabled -}}
{{- $requests := get $res "requests" | default dict -}}
{{- $limits := get $res "limits" | default dict -}}
{{- $_ := set $requests $rdma.resourceName (int $rdma.count) -}}
{{- $_ := set $limits $rdma.resourceName (int $rdma.count) -}}
{{- $_ := set $res "requests" $requests -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* ============================================================ scheduling */}}

{{/* The component's priorityClassName: its own, else the chart's class when priorityClasses.create (critical:
trainer, controller, Redis; workers: the rest). Arg: dict root component */}}
{{- define "semirl.priorityClassName" -}}
{{- $c := index .root.Values .component -}}
{{- if $c.priorityClassName -}}
{{- $c.priorityClassName -}}
{{- else if .root.Values.priorityClasses.create -}}
{{- $tier := ternary "critical" "workers" (has .component (list "trainer" "controller" "redis")) -}}
{{- printf "%s-%s" (include "semirl.fullname" .root) $tier -}}
{{- end -}}
{{- end -}}

{{/* Tolerations: the component's own, plus the GPU nodes' for a CPU pod when accelerator.cpuPodsTolerateGpuNodes.
Arg: dict root tolerations gpus */}}
{{- define "semirl.tolerations" -}}
{{- $tolerations := .tolerations | default list -}}
{{- if and .root.Values.accelerator.cpuPodsTolerateGpuNodes (eq (int (.gpus | default 0)) 0) -}}
{{- $gpu := dict "key" .root.Values.accelerator.resourceName "operator" "Exists" "effect" "NoSchedule" -}}
{{- if not (has $gpu $tolerations) -}}
{{- $tolerations = append $tolerations $gpu -}}
{{- end -}}
{{- end -}}
{{- with $tolerations -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/* The init container that waits for the staging Job's .semirl-staged marker under `target`, in the pod's own
image. Arg: dict root image target */}}
{{- define "semirl.waitForStaged" -}}
- name: wait-for-model
  image: {{ include "semirl.image" (dict "root" .root "image" .image) | quote }}
  imagePullPolicy: {{ .image.pullPolicy }}
  command: ["python", "-c"]
  args:
    - |
      import os, sys, time
      marker = os.path.join(os.environ["STAGED_MODEL"], ".semirl-staged")
      for waited in range(0, 6 * 3600, 10):
          if os.path.exists(marker):
              sys.exit(0)
          if waited % 300 == 0:
              print(f"waiting for {marker} (the model-staging Job) for {waited} s", flush=True)
          time.sleep(10)
      sys.exit(f"{marker}: not there after 6 h; see the model-staging Job's logs")
  env:
    - name: STAGED_MODEL
      value: {{ .target | quote }}
  resources:
    requests: {cpu: 10m, memory: 64Mi}
    limits: {memory: 128Mi}
  securityContext:
    {{- include "semirl.containerSecurityContext" dict | nindent 4 }}
  volumeMounts:
    - name: checkpoints
      mountPath: {{ .root.Values.checkpoints.mountPath }}
      readOnly: true
{{- end -}}

{{/*
The component's affinity with the driver gate (accelerator.driverGate) when it has GPUs: `<nodeLabel> Gt
<minMajor - 1>` ANDed into every required nodeSelectorTerm of its own affinity (one term when it has none), so
no GPU pod lands on a node whose driver cannot run the images' CUDA. Arg: dict root c
*/}}
{{- define "semirl.affinity" -}}
{{- $affinity := deepCopy (.c.affinity | default dict) -}}
{{- $gate := .root.Values.accelerator.driverGate -}}
{{- if and $gate.enabled (gt (int (.c.gpus | default 0)) 0) -}}
{{- $expr := dict "key" $gate.nodeLabel "operator" "Gt" "values" (list (toString (sub (int $gate.minMajor) 1))) -}}
{{- $node := get $affinity "nodeAffinity" | default dict -}}
{{- $required := get $node "requiredDuringSchedulingIgnoredDuringExecution" | default dict -}}
{{- $terms := list -}}
{{- range (get $required "nodeSelectorTerms" | default (list dict)) -}}
{{- $term := deepCopy . -}}
{{- $_ := set $term "matchExpressions" (append (get $term "matchExpressions" | default list) $expr) -}}
{{- $terms = append $terms $term -}}
{{- end -}}
{{- $_ := set $required "nodeSelectorTerms" $terms -}}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $required -}}
{{- $_ := set $affinity "nodeAffinity" $node -}}
{{- end -}}
{{- if $affinity }}{{ toYaml $affinity }}{{ end -}}
{{- end -}}

{{/* ============================================================ autoscaling */}}

{{- define "semirl.autoscaled" -}}
{{- if and .autoscaling (or .autoscaling.hpa.enabled .autoscaling.keda.enabled) -}}true{{- end -}}
{{- end -}}

{{/* "true" when a KEDA ScaledObject is rendered for this component. Arg: dict root component */}}
{{- define "semirl.kedaRendered" -}}
{{- $c := index .root.Values .component -}}
{{- if and $c.enabled $c.autoscaling.keda.enabled (.root.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") -}}true{{- end -}}
{{- end -}}

{{/* The Redis stream and consumer group each scalable worker reads (services/semirl/core/keys.py). */}}
{{- define "semirl.streams" -}}
generator: {stream: "semirl:stream:prompts", consumerGroup: generators}
verifier: {stream: "semirl:stream:to_verify", consumerGroup: verifiers}
reward: {stream: "semirl:stream:to_reward", consumerGroup: rewards}
{{- end -}}

{{/* ============================================================ redis */}}

{{- define "semirl.redis.host" -}}
{{- if .Values.redis.enabled -}}
{{- include "semirl.componentName" (dict "root" . "component" "redis") -}}
{{- else -}}
{{- required "externalRedis.host is required when redis.enabled is false" .Values.externalRedis.host -}}
{{- end -}}
{{- end -}}

{{/* Host name that resolves from any namespace (KEDA's operator runs in its own). */}}
{{- define "semirl.redis.fqdn" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s.%s.svc.%s" (include "semirl.redis.host" .) .Release.Namespace .Values.global.clusterDomain -}}
{{- else -}}
{{- include "semirl.redis.host" . -}}
{{- end -}}
{{- end -}}

{{- define "semirl.redis.port" -}}
{{- if .Values.redis.enabled -}}{{ .Values.redis.port }}{{- else -}}{{ .Values.externalRedis.port }}{{- end -}}
{{- end -}}

{{/* "true" when Redis needs a password. */}}
{{- define "semirl.redis.auth" -}}
{{- if .Values.redis.enabled -}}
{{- if .Values.redis.auth.enabled -}}true{{- end -}}
{{- else if .Values.externalRedis.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "semirl.redis.secretName" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecret | default (include "semirl.componentName" (dict "root" . "component" "redis")) -}}
{{- else -}}
{{- .Values.externalRedis.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "semirl.redis.secretKey" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecretPasswordKey -}}
{{- else -}}
{{- .Values.externalRedis.existingSecretPasswordKey -}}
{{- end -}}
{{- end -}}

{{/* SEMIRL_REDIS_PASSWORD (declared first, for $(VAR) expansion) and SEMIRL_REDIS_URL: the one place both are built. */}}
{{- define "semirl.redis.env" -}}
{{- $auth := include "semirl.redis.auth" . -}}
{{- if $auth }}
- name: SEMIRL_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "semirl.redis.secretName" . }}
      key: {{ include "semirl.redis.secretKey" . }}
{{- end }}
- name: SEMIRL_REDIS_URL
  value: {{ printf "redis://%s%s:%s/0" (ternary ":$(SEMIRL_REDIS_PASSWORD)@" "" (eq $auth "true")) (include "semirl.redis.host" .) (include "semirl.redis.port" .) | quote }}
{{- end -}}

{{/* ============================================================ env */}}

{{/*
The chart's env (a YAML list in .chart) with the component's own `env` applied: an entry with a name the chart
already sets replaces the chart's at the same position (so $(VAR) references keep working), the rest follow.
Names stay unique, which server-side apply requires. Arg: dict chart user
*/}}
{{- define "semirl.mergeEnv" -}}
{{- $user := dict -}}
{{- range .user }}{{- $_ := set $user .name . -}}{{- end -}}
{{- $out := list -}}
{{- $seen := dict -}}
{{- range (fromYamlArray .chart) -}}
{{- if hasKey $user .name -}}
{{- $out = append $out (get $user .name) -}}
{{- else -}}
{{- $out = append $out . -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- range .user -}}
{{- if not (hasKey $seen .name) -}}
{{- $out = append $out . -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Environment every semirl service gets. Arg: dict root component */}}
{{- define "semirl.commonEnv" -}}
{{- $c := index .root.Values .component -}}
{{- include "semirl.redis.env" .root }}
- name: SEMIRL_GRPC_PORT
  value: {{ $c.grpc.port | quote }}
- name: SEMIRL_METRICS_PORT
  value: {{ $c.metrics.port | quote }}
- name: SEMIRL_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- end -}}

{{/* ============================================================ probes */}}

{{/* Timing fields of a probe (the `enabled` switch removed). */}}
{{- define "semirl.probeTimings" -}}
{{- toYaml (omit . "enabled") -}}
{{- end -}}

{{/* Native gRPC probes: startup + liveness on service "liveness", readiness on "readiness"; numeric port. */}}
{{- define "semirl.grpcProbes" -}}
{{- $port := int .grpc.port -}}
{{- if .startupProbe.enabled }}
startupProbe:
  grpc:
    port: {{ $port }}
    service: liveness
  {{- include "semirl.probeTimings" .startupProbe | nindent 2 }}
{{- end }}
{{- if .livenessProbe.enabled }}
livenessProbe:
  grpc:
    port: {{ $port }}
    service: liveness
  {{- include "semirl.probeTimings" .livenessProbe | nindent 2 }}
{{- end }}
{{- if .readinessProbe.enabled }}
readinessProbe:
  grpc:
    port: {{ $port }}
    service: readiness
  {{- include "semirl.probeTimings" .readinessProbe | nindent 2 }}
{{- end }}
{{- end -}}

{{/* ============================================================ pod template */}}

{{/*
The pod template of a semirl service. Args: dict
  root, component,
  env         (YAML list: component-specific env after the common env),
  checkpoints ("rw", "ro" or "": how the checkpoint store is mounted),
  ports       (YAML list: extra container ports),
  probes      (YAML: overrides the gRPC probes, e.g. the controller's HTTP ones)
*/}}
{{- define "semirl.podTemplate" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $c := index $root.Values $component -}}
{{- $ctx := dict "root" $root "component" $component -}}
{{- $labels := merge (fromYaml (include "semirl.labels" $ctx)) ($c.podLabels | default dict) -}}
{{- $fabric := $c.fabric | default dict -}}
{{- if and (eq $component "trainer") $c.kueue.queueName -}}
{{- $labels = merge $labels (dict "kueue.x-k8s.io/queue-name" $c.kueue.queueName) -}}
{{- end -}}
{{- $annotations := deepCopy ($c.podAnnotations | default dict) -}}
{{- with $fabric.networks -}}
{{- $_ := set $annotations "k8s.v1.cni.cncf.io/networks" . -}}
{{- end -}}
{{- $securityContext := deepCopy ($c.containerSecurityContext | default dict) -}}
{{- if $fabric.ipcLock -}}
{{- $caps := deepCopy (get $securityContext "capabilities" | default dict) -}}
{{- $_ := set $caps "add" (uniq (append ($caps.add | default list) "IPC_LOCK")) -}}
{{- $_ := set $securityContext "capabilities" $caps -}}
{{- end -}}
{{- $staging := $root.Values.modelStaging -}}
{{- $waitTarget := "" -}}
{{- if and $staging.enabled $staging.waitInPods $root.Values.checkpoints.enabled -}}
{{- if has $component (list "generator" "trainer") -}}
{{- $waitTarget = printf "%s/%s" (trimSuffix "/" $root.Values.checkpoints.mountPath) $staging.path -}}
{{- else if and (eq $component "reward") $staging.rewardModel.repo -}}
{{- $waitTarget = printf "%s/%s" (trimSuffix "/" $root.Values.checkpoints.mountPath) $staging.rewardModel.path -}}
{{- end -}}
{{- end -}}
metadata:
  labels:
    {{- toYaml $labels | nindent 4 }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if $fabric.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  serviceAccountName: {{ include "semirl.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ $c.serviceAccount.automountServiceAccountToken }}
  {{- with include "semirl.imagePullSecrets" $root }}
  {{- . | nindent 2 }}
  {{- end }}
  securityContext:
    {{- include "semirl.podSecurityContext" $c.podSecurityContext | nindent 4 }}
  {{- with include "semirl.priorityClassName" $ctx }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $c.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- if not (kindIs "invalid" $c.terminationGracePeriodSeconds) }}
  terminationGracePeriodSeconds: {{ int $c.terminationGracePeriodSeconds }}
  {{- end }}
  {{- with $c.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "semirl.tolerations" (dict "root" $root "tolerations" $c.tolerations "gpus" $c.gpus) }}
  tolerations:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with include "semirl.affinity" (dict "root" $root "c" $c) }}
  affinity:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with $c.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if or $c.extraInitContainers $waitTarget }}
  initContainers:
    {{- if $waitTarget }}
    {{- include "semirl.waitForStaged" (dict "root" $root "image" $c.image "target" $waitTarget) | nindent 4 }}
    {{- end }}
    {{- with $c.extraInitContainers }}
    {{- $inits := list }}
    {{- range . }}
    {{- $init := deepCopy . }}
    {{- $_ := set $init "securityContext" (fromYaml (include "semirl.containerSecurityContext" ($init.securityContext | default dict))) }}
    {{- $inits = append $inits $init }}
    {{- end }}
    {{- toYaml $inits | nindent 4 }}
    {{- end }}
  {{- end }}
  containers:
    - name: {{ $component }}
      image: {{ include "semirl.image" (dict "root" $root "image" $c.image) | quote }}
      imagePullPolicy: {{ $c.image.pullPolicy }}
      command:
        {{- toYaml ($c.command | default (list "python" "-m" (printf "semirl.%s" $component))) | nindent 8 }}
      {{- with (concat ($c.args | default list) ($c.extraArgs | default list)) }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: grpc
          containerPort: {{ $c.grpc.port }}
          protocol: TCP
        {{- if gt (int $c.metrics.port) 0 }}
        - name: metrics
          containerPort: {{ $c.metrics.port }}
          protocol: TCP
        {{- end }}
        {{- with .ports }}
        {{- . | nindent 8 }}
        {{- end }}
      env:
        {{- $chartEnv := printf "%s\n%s" (include "semirl.commonEnv" $ctx) (.env | default "") }}
        {{- include "semirl.mergeEnv" (dict "chart" $chartEnv "user" $c.env) | nindent 8 }}
      {{- with $c.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- include "semirl.resources" (dict "root" $root "c" $c) | nindent 8 }}
      securityContext:
        {{- include "semirl.containerSecurityContext" $securityContext | nindent 8 }}
      {{- with (.probes | default (include "semirl.grpcProbes" $c)) | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $c.shmSize }}
        - name: shm
          mountPath: /dev/shm
        {{- end }}
        {{- if and .checkpoints $root.Values.checkpoints.enabled }}
        - name: checkpoints
          mountPath: {{ $root.Values.checkpoints.mountPath }}
          {{- if eq .checkpoints "ro" }}
          readOnly: true
          {{- end }}
        {{- end }}
        {{- if ($c.compileCache | default dict).enabled }}
        - name: compile-cache
          mountPath: {{ $c.compileCache.mountPath }}
        {{- end }}
        {{- with $c.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if $c.shmSize }}
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $c.shmSize }}
    {{- end }}
    {{- if and .checkpoints $root.Values.checkpoints.enabled }}
    - name: checkpoints
      persistentVolumeClaim:
        claimName: {{ include "semirl.checkpoints.claimName" $root }}
        {{- if eq .checkpoints "ro" }}
        readOnly: true
        {{- end }}
    {{- end }}
    {{- if ($c.compileCache | default dict).enabled }}
    - name: compile-cache
      persistentVolumeClaim:
        claimName: {{ $c.compileCache.existingClaim | default (include "semirl.componentName" (dict "root" $root "component" "compile-cache")) }}
    {{- end }}
    {{- with $c.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "semirl.checkpoints.claimName" -}}
{{- .Values.checkpoints.existingClaim | default (include "semirl.componentName" (dict "root" . "component" "checkpoints")) -}}
{{- end -}}

{{/* A Deployment of one semirl service. Args: as semirl.podTemplate */}}
{{- define "semirl.deployment" -}}
{{- $c := index .root.Values .component -}}
{{- $ctx := dict "root" .root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "semirl.componentName" $ctx }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "semirl.labels" $ctx | nindent 4 }}
spec:
  {{- /* Left to the autoscaler only when one is rendered (a KEDA value on a cluster without KEDA keeps it). */}}
  {{- if not (or $c.autoscaling.hpa.enabled (include "semirl.kedaRendered" $ctx)) }}
  replicas: {{ $c.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- with $c.updateStrategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "semirl.selectorLabels" $ctx | nindent 6 }}
  template:
    {{- include "semirl.podTemplate" . | nindent 4 }}
{{- end -}}

{{/* The Secret with the controller's API token (key api-token unless controller.auth.existingSecretKey). */}}
{{- define "semirl.controller.tokenSecretName" -}}
{{- .Values.controller.auth.existingSecret | default (printf "%s-api-token" (include "semirl.fullname" .)) -}}
{{- end -}}

{{- define "semirl.controller.tokenSecretKey" -}}
{{- if .Values.controller.auth.existingSecret -}}{{ .Values.controller.auth.existingSecretKey }}{{- else -}}api-token{{- end -}}
{{- end -}}

{{/* torch.distributed rendezvous port on trainer pod 0. */}}
{{- define "semirl.trainer.masterPort" -}}29500{{- end -}}
