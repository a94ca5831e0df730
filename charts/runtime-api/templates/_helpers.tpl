{{/* Name of the chart (app.kubernetes.io/name). */}}
{{- define "runtime-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "runtime-api.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "runtime-api.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: also what sandbox NetworkPolicies admit (SERVICE_POD_LABELS). */}}
{{- define "runtime-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runtime-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels. Never app.kubernetes.io/managed-by=runtime-api: that marks the service's own
sandbox objects. The plain manifests of deploy/ are not managed by Helm, so they leave out Helm's.
*/}}
{{- define "runtime-api.labels" -}}
{{- if not .Values.plainManifests }}
helm.sh/chart: {{ include "runtime-api.chart" . }}
{{ end -}}
{{ include "runtime-api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
{{- if not .Values.plainManifests }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- end }}

{{/*
metadata.namespace of the release's objects: none in the plain manifests of deploy/, where
`kubectl apply -n` chooses it (and the service reads it from the downward API).
*/}}
{{- define "runtime-api.namespace" -}}
{{- if not .Values.plainManifests }}{{ .Release.Namespace }}{{ end }}
{{- end }}

{{- define "runtime-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "runtime-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace of the sandboxes (and of the Role): config.namespace or the release's. */}}
{{- define "runtime-api.sandboxNamespace" -}}
{{- default .Release.Namespace .Values.config.namespace }}
{{- end }}

{{/* metadata.namespace of the Role and RoleBinding (see runtime-api.namespace). */}}
{{- define "runtime-api.sandboxMetaNamespace" -}}
{{- if not .Values.plainManifests }}{{ include "runtime-api.sandboxNamespace" . }}{{ end }}
{{- end }}

{{- define "runtime-api.secretName" -}}
{{- default (include "runtime-api.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "runtime-api.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
config: camelCase value key -> environment variable of the service (README's configuration table).
NAMESPACE and POD_NAME are set in the Deployment (downward API), not in the ConfigMap.
*/}}
{{- define "runtime-api.configEnvNames" -}}
serverPort: SERVER_PORT
bindAddress: BIND_ADDRESS
backend: BACKEND
namespace: NAMESPACE
ingressClass: INGRESS_CLASS
baseDomain: BASE_DOMAIN
registryPrefix: REGISTRY_PREFIX
defaultImage: DEFAULT_IMAGE
agentServerPort: AGENT_SERVER_PORT
vscodePort: VSCODE_PORT
worker1Port: WORKER_1_PORT
worker2Port: WORKER_2_PORT
appServerUrl: APP_SERVER_URL
appServerPublicUrl: APP_SERVER_PUBLIC_URL
rotateSessionKeyOnResume: ROTATE_SESSION_KEY_ON_RESUME
warmPoolSize: WARM_POOL_SIZE
warmPools: WARM_POOLS
maxBodyBytes: MAX_BODY_BYTES
shutdownTimeoutSeconds: SHUTDOWN_TIMEOUT_SECONDS
logFormat: LOG_FORMAT
logLevel: LOG_LEVEL
rustLog: RUST_LOG
stateDir: STATE_DIR
processAgentCommand: PROCESS_AGENT_COMMAND
routingMode: ROUTING_MODE
sandboxUrlScheme: SANDBOX_URL_SCHEME
sandboxServiceClusterIp: SANDBOX_SERVICE_CLUSTER_IP
ingressTlsSecret: INGRESS_TLS_SECRET
ingressAnnotations: INGRESS_ANNOTATIONS
ingressNamespace: INGRESS_NAMESPACE
servicePodLabels: SERVICE_POD_LABELS
sandboxCpuRequest: SANDBOX_CPU_REQUEST
sandboxMemoryRequest: SANDBOX_MEMORY_REQUEST
sandboxCpuLimit: SANDBOX_CPU_LIMIT
sandboxMemoryLimit: SANDBOX_MEMORY_LIMIT
runtimeClasses: RUNTIME_CLASSES
privilegedRuntimeClasses: PRIVILEGED_RUNTIME_CLASSES
imagePullSecrets: IMAGE_PULL_SECRETS
insecureRegistries: INSECURE_REGISTRIES
caCertSecret: CA_CERT_SECRET
caCertSecretKey: CA_CERT_SECRET_KEY
k8sOperationTimeout: K8S_OPERATION_TIMEOUT
k8sQueryTimeout: K8S_QUERY_TIMEOUT
workspaceStorageSize: WORKSPACE_STORAGE_SIZE
workspaceStorageClass: WORKSPACE_STORAGE_CLASS
sandboxPodLabels: SANDBOX_POD_LABELS
sandboxNodeSelector: SANDBOX_NODE_SELECTOR
sandboxTolerations: SANDBOX_TOLERATIONS
runtimeIdleSeconds: RUNTIME_IDLE_SECONDS
runtimeDeadSeconds: RUNTIME_DEAD_SECONDS
runtimeFailedSeconds: RUNTIME_FAILED_SECONDS
runtimeFailedAction: RUNTIME_FAILED_ACTION
maintenanceIntervalSeconds: MAINTENANCE_INTERVAL_SECONDS
orphanGraceSeconds: ORPHAN_GRACE_SECONDS
leaseName: LEASE_NAME
leaseDurationSeconds: LEASE_DURATION_SECONDS
gatewayPort: GATEWAY_PORT
gatewayUrl: GATEWAY_URL
gatewayWakeTimeoutSeconds: GATEWAY_WAKE_TIMEOUT_SECONDS
gatewayUpstreamTimeoutSeconds: GATEWAY_UPSTREAM_TIMEOUT_SECONDS
gatewayMaxConnectionsPerRuntime: GATEWAY_MAX_CONNECTIONS_PER_RUNTIME
gatewayActivityIntervalSeconds: GATEWAY_ACTIVITY_INTERVAL_SECONDS
proxyBaseUrl: PROXY_BASE_URL
directRouting: DIRECT_ROUTING
directRoutingCorsAllowOrigin: DIRECT_ROUTING_CORS_ALLOW_ORIGIN
{{- end }}

{{/* Whether the sandbox gateway runs (ROUTING_MODE=gateway). */}}
{{- define "runtime-api.gatewayEnabled" -}}
{{- if eq (toString .Values.config.routingMode) "gateway" }}true{{ end }}
{{- end }}

{{/*
One config value as an environment string: lists -> "a,b", maps -> "k=v,k2=v2" (sorted),
whole numbers without exponent, null -> "".
*/}}
{{- define "runtime-api.envValue" -}}
{{- $v := . }}
{{- if kindIs "invalid" $v }}
{{- else if kindIs "slice" $v }}
{{- $items := list }}
{{- range $v }}{{ $items = append $items (include "runtime-api.envValue" .) }}{{ end }}
{{- join "," $items }}
{{- else if kindIs "map" $v }}
{{- $pairs := list }}
{{- range $k := keys $v | sortAlpha }}{{ $pairs = append $pairs (printf "%s=%s" $k (include "runtime-api.envValue" (get $v $k))) }}{{ end }}
{{- join "," $pairs }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq (float64 $v) (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else }}
{{- toString $v }}
{{- end }}
{{- end }}

{{/* The ConfigMap's data: every non-empty config value under its environment name. */}}
{{- define "runtime-api.configData" -}}
{{- $names := include "runtime-api.configEnvNames" . | fromYaml }}
{{- $data := dict }}
{{- range $key, $value := .Values.config }}
{{- $env := get $names $key }}
{{- if not $env }}
{{- fail (printf "config.%s is not a setting of the runtime API (known: %s)" $key (keys $names | sortAlpha | join ", ")) }}
{{- end }}
{{- $s := include "runtime-api.envValue" $value }}
{{- if and (ne $key "namespace") (ne $s "") }}
{{- $_ := set $data $env $s }}
{{- end }}
{{- end }}
{{- if not .Values.config.servicePodLabels }}
{{- $_ := set $data "SERVICE_POD_LABELS" (printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "runtime-api.name" .) .Release.Name) }}
{{- end }}
{{- toYaml $data }}
{{- end }}
