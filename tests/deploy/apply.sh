#!/usr/bin/env bash
# tests/deploy/apply.sh - applies the deployment artefacts (deploy/*.yaml and the Helm chart in
# charts/runtime-api) to the real test API server and checks what the cluster makes of them.
#
#   eval "$(scripts/cluster.sh up)"    # or: eval "$(scripts/cluster.sh env)" when it already runs
#   tests/deploy/apply.sh
#
# Needs KUBECONFIG (admin), kubectl and go (Helm is built by scripts/helm.sh if not cached).
# Works in two throwaway namespaces (Pod Security "restricted" enforced), deletes them at the end,
# prints every check and exits non-zero if any failed (2 if it could not run at all).
#
#  0. deploy/ is the chart's render (scripts/render-deploy.sh --check);
#  1. every deploy/*.yaml but servicemonitor.yaml: `kubectl apply --server-side --dry-run=server`,
#     no error and no warning (unknown fields, deprecated APIs, Pod Security violations);
#  2. a real apply of deploy/rbac.yaml + deploy/runtime-api.yaml (with the Secret created as
#     deploy/README.md says): the objects exist, the ServiceAccount may do exactly what the service
#     needs (kubectl auth can-i), the Deployment rolls out (kwok nodes) under "restricted", spread
#     over two nodes, the Service has two ready endpoints, the PodDisruptionBudget blocks the
#     second eviction;
#  3. the chart: `helm lint --strict`, `helm template` (default values and every option on),
#     dry-run applies of both, a real apply of the default render that rolls out, config values
#     rendered as the service expects them, Role rules identical to deploy/rbac.yaml's, sandboxes
#     in another namespace, every setting of src/config/ covered, the failure on an unknown
#     config key; then a real `helm install` + `helm upgrade` of a second release (NOTES.txt, the
#     generated API key kept across the upgrade, a config change rolling the pods) and uninstall.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
: "${KUBECONFIG:?KUBECONFIG must point at the cluster (eval \"\$(scripts/cluster.sh up)\")}"
command -v kubectl >/dev/null || { echo "kubectl not on PATH" >&2; exit 2; }
kubectl get --raw /readyz >/dev/null 2>&1 || { echo "the API server in $KUBECONFIG is not ready" >&2; exit 2; }

NS="deploy-$$-$RANDOM"            # plain manifests
CHART_NS="$NS-chart"              # the Helm chart
RELEASE=rt
CHART_NAME=$RELEASE-runtime-api   # the chart's full name for that release
TMP=$(mktemp -d)
FAILED=0
PASSED=0
ROLLOUT_TIMEOUT=${DEPLOY_TEST_ROLLOUT_TIMEOUT:-120s}

cleanup() {
  local rc=$? n
  for n in "$NS" "$CHART_NS"; do
    kubectl delete namespace "$n" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  done
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$1"; [[ -n ${2:-} ]] && printf '%s\n' "$2" | sed 's/^/      /'; return 0; }
skip() { printf 'SKIP  %s\n' "$1"; }

# check DESCRIPTION COMMAND...: run once.
check() { local d=$1 out; shift; if out=$("$@" 2>&1); then pass "$d"; else fail "$d" "$out"; fi; }

# eventually TIMEOUT DESCRIPTION COMMAND...: retry every second until it succeeds.
eventually() {
  local timeout=$1 d=$2 out; shift 2
  local deadline=$((SECONDS + timeout))
  while :; do
    if out=$("$@" 2>&1); then pass "$d"; return 0; fi
    if ((SECONDS >= deadline)); then fail "$d (after ${timeout}s)" "$out"; return 1; fi
    sleep 1
  done
}

# clean COMMAND...: succeeds if the command does and prints no warning (kubectl: "Warning: ...").
clean() {
  local out rc
  out=$("$@" 2>&1); rc=$?
  printf '%s\n' "$out"
  ((rc == 0)) || return "$rc"
  if grep -qi '^warning' <<<"$out"; then echo "(warnings are errors here)"; return 1; fi
}

dry_run() { # NAMESPACE FILE...
  local ns=$1 f args=(); shift
  for f in "$@"; do args+=(-f "$f"); done
  clean kubectl apply --server-side --dry-run=server --field-manager=deploy-test -n "$ns" "${args[@]}"
}

equals() { # WANT COMMAND...: the command prints exactly WANT
  local want=$1 got; shift
  got=$("$@" 2>&1) || { echo "$got"; return 1; }
  [[ $got == "$want" ]] || { printf 'got:  %s\nwant: %s\n' "$got" "$want"; return 1; }
}

none() { # WHAT ITEMS...: fails listing the items if there are any
  local what=$1; shift
  (($# == 0)) || { echo "$what: $*"; return 1; }
}

can() { # NAMESPACE SERVICEACCOUNT VERB RESOURCE [NAMESPACE-OF-CHECK]
  equals yes kubectl auth can-i --as="system:serviceaccount:$1:$2" -n "${5:-$1}" "$3" "$4"
}
cannot() {
  local out; out=$(kubectl auth can-i --as="system:serviceaccount:$1:$2" -n "${5:-$1}" "$3" "$4" 2>&1)
  [[ $out == no* ]] || { echo "expected no, got: $out"; return 1; }
}

# Every permission the service needs (deploy/rbac.yaml), and a few it must not have.
check_permissions() { # NAMESPACE-OF-SA SERVICEACCOUNT SANDBOX-NAMESPACE LABEL
  local sa_ns=$1 sa=$2 ns=$3 what=$4 v r missing=()
  for r in configmaps secrets; do
    for v in get list watch create patch delete; do can "$sa_ns" "$sa" $v $r "$ns" >/dev/null || missing+=("$v $r"); done
  done
  for v in list watch create delete deletecollection; do can "$sa_ns" "$sa" $v pods "$ns" >/dev/null || missing+=("$v pods"); done
  for r in services persistentvolumeclaims ingresses.networking.k8s.io networkpolicies.networking.k8s.io; do
    for v in list create delete; do can "$sa_ns" "$sa" $v $r "$ns" >/dev/null || missing+=("$v $r"); done
  done
  can "$sa_ns" "$sa" update networkpolicies.networking.k8s.io "$ns" >/dev/null || missing+=("update networkpolicies")
  for v in get create update; do can "$sa_ns" "$sa" $v leases.coordination.k8s.io "$ns" >/dev/null || missing+=("$v leases"); done
  for r in events events.events.k8s.io; do
    for v in create patch; do can "$sa_ns" "$sa" $v $r "$ns" >/dev/null || missing+=("$v $r"); done
  done
  check "$what: the ServiceAccount may do all the service needs in $ns (incl. leases, events)" \
    none "missing" "${missing[@]}"
  local extra=()
  cannot "$sa_ns" "$sa" delete leases.coordination.k8s.io "$ns" >/dev/null || extra+=("delete leases")
  cannot "$sa_ns" "$sa" update secrets "$ns" >/dev/null || extra+=("update secrets")
  cannot "$sa_ns" "$sa" create deployments.apps "$ns" >/dev/null || extra+=("create deployments")
  cannot "$sa_ns" "$sa" create roles.rbac.authorization.k8s.io "$ns" >/dev/null || extra+=("create roles")
  cannot "$sa_ns" "$sa" get secrets default >/dev/null || extra+=("get secrets in default")
  cannot "$sa_ns" "$sa" list pods kube-system >/dev/null || extra+=("list pods in kube-system")
  check "$what: and nothing more (no delete leases, update secrets, deployments, roles, other namespaces)" \
    none "unexpectedly allowed" "${extra[@]}"
}

pods_ready_on_distinct_nodes() { # NAMESPACE SELECTOR COUNT
  local lines nodes
  lines=$(kubectl get pods -n "$1" -l "$2" --field-selector=status.phase=Running \
    -o jsonpath='{range .items[?(@.metadata.deletionTimestamp)]}x{end}{range .items[*]}{.spec.nodeName}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}') || return 1
  [[ $lines != x* ]] || { echo "pods still terminating"; return 1; }
  nodes=$(awk '$2 == "True" { print $1 }' <<<"$lines" | sort -u | grep -c .)
  [[ $(grep -c . <<<"$lines") == "$3" && $nodes == "$3" ]] \
    || { printf 'want %s ready pods on %s nodes, got:\n%s\n' "$3" "$3" "$lines"; return 1; }
}

ready_endpoints() { # NAMESPACE SERVICE COUNT PORT
  local out
  out=$(kubectl get endpointslices -n "$1" -l "kubernetes.io/service-name=$2" \
    -o jsonpath='{range .items[*]}{range .ports[*]}port={.port}{"\n"}{end}{range .endpoints[*]}ready={.conditions.ready}{"\n"}{end}{end}') || return 1
  [[ $(grep -c '^ready=true$' <<<"$out") == "$3" ]] && grep -qx "port=$4" <<<"$out" \
    || { printf 'want %s ready endpoints on port %s, got:\n%s\n' "$3" "$4" "$out"; return 1; }
}

evict() { # NAMESPACE POD: prints the HTTP answer of the Eviction
  kubectl create --raw "/api/v1/namespaces/$1/pods/$2/eviction" -f - 2>&1 <<EOF
{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "$2", "namespace": "$1"}}
EOF
}

pdb_blocks_second_eviction() { # NAMESPACE SELECTOR
  local pods out
  mapfile -t pods < <(kubectl get pods -n "$1" -l "$2" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  ((${#pods[@]} == 2)) || { echo "want 2 pods, got ${#pods[@]}"; return 1; }
  out=$(evict "$1" "${pods[0]}") || { echo "first eviction refused: $out"; return 1; }
  echo "${pods[0]}" >"$TMP/evicted"
  if out=$(evict "$1" "${pods[1]}"); then echo "second eviction allowed: $out"; return 1; fi
  grep -qi 'disruption budget' <<<"$out" || { echo "second eviction failed for another reason: $out"; return 1; }
}

# ---------------------------------------------------------------- setup ----
KUBE_VERSION=$(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
echo "API server $KUBE_VERSION ($(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')); namespaces $NS, $CHART_NS"
for n in "$NS" "$CHART_NS"; do
  kubectl create namespace "$n" >/dev/null && kubectl label namespace "$n" \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted >/dev/null \
    || { echo "cannot create namespace $n" >&2; exit 2; }
done

# ------------------------------------------------ 0. deploy/ is the chart's render ----
check "deploy/*.yaml are the chart's render (scripts/render-deploy.sh --check)" scripts/render-deploy.sh --check

# ------------------------------------------------ 1. plain manifests, dry run ----
MANIFESTS=()
for f in deploy/*.yaml; do
  [[ $f == deploy/servicemonitor.yaml ]] && continue   # needs the Prometheus Operator's CRD
  MANIFESTS+=("$f")
  check "dry-run apply of $f" dry_run "$NS" "$f"
done
check "dry-run apply of all of them at once" dry_run "$NS" "${MANIFESTS[@]}"
if kubectl get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
  check "dry-run apply of deploy/servicemonitor.yaml" dry_run "$NS" deploy/servicemonitor.yaml
else
  skip "deploy/servicemonitor.yaml: no monitoring.coreos.com ServiceMonitor CRD in this cluster"
fi

# --------------------------------------------- 2. plain manifests, real apply ----
# The Secret exactly as deploy/README.md says.
check "create the API key Secret (kubectl create secret generic runtime-api)" \
  kubectl create secret generic runtime-api -n "$NS" --from-literal=API_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
check "apply deploy/rbac.yaml and deploy/runtime-api.yaml" \
  clean kubectl apply --server-side --field-manager=deploy-test -n "$NS" -f deploy/rbac.yaml -f deploy/runtime-api.yaml
check "objects exist: ServiceAccount, Role, RoleBinding, ConfigMap, Deployment, Service, PodDisruptionBudget" \
  kubectl get -n "$NS" serviceaccount/runtime-api role/runtime-api rolebinding/runtime-api configmap/runtime-api \
    deployment/runtime-api service/runtime-api poddisruptionbudget/runtime-api
check_permissions "$NS" runtime-api "$NS" "deploy/rbac.yaml"
SEL=app.kubernetes.io/name=runtime-api
check "Deployment rolls out (2 replicas, Pod Security restricted enforced)" \
  kubectl rollout status -n "$NS" deployment/runtime-api --timeout="$ROLLOUT_TIMEOUT"
eventually 30 "the 2 pods are Ready on 2 different nodes (topology spread)" pods_ready_on_distinct_nodes "$NS" "$SEL" 2
check "pods run as the ServiceAccount runtime-api with NAMESPACE and POD_NAME from the downward API" \
  equals "runtime-api metadata.namespace metadata.name" kubectl get pods -n "$NS" -l "$SEL" -o \
    jsonpath='{.items[0].spec.serviceAccountName} {.items[0].spec.containers[0].env[?(@.name=="NAMESPACE")].valueFrom.fieldRef.fieldPath} {.items[0].spec.containers[0].env[?(@.name=="POD_NAME")].valueFrom.fieldRef.fieldPath}'
eventually 30 "Service runtime-api has 2 ready endpoints on port 8080" ready_endpoints "$NS" runtime-api 2 8080
eventually 30 "PodDisruptionBudget: 2 healthy, 1 disruption allowed" \
  equals "2 1" kubectl get pdb runtime-api -n "$NS" -o jsonpath='{.status.currentHealthy} {.status.disruptionsAllowed}'
check "PodDisruptionBudget: the first eviction passes, the second is refused" pdb_blocks_second_eviction "$NS" "$SEL"
replaced() { # NAMESPACE SELECTOR: the evicted pod is gone and 2 others are Ready on 2 nodes
  local evicted; evicted=$(cat "$TMP/evicted" 2>/dev/null) || { echo "nothing was evicted"; return 1; }
  if kubectl get pod -n "$1" "$evicted" -o name >/dev/null 2>&1; then echo "$evicted still exists"; return 1; fi
  pods_ready_on_distinct_nodes "$1" "$2" 2
}
eventually 60 "the evicted pod is replaced: 2 Ready pods on 2 nodes again" replaced "$NS" "$SEL"
# NAMESPACE: the Deployment's generation (its status moves on its own) and the resourceVersions
# of objects no controller writes stay the same.
versions() {
  printf '%s ' "$(kubectl get deployment runtime-api -n "$1" -o jsonpath='{.metadata.generation}')"
  kubectl get -n "$1" configmap/runtime-api role/runtime-api rolebinding/runtime-api service/runtime-api \
    poddisruptionbudget/runtime-api -o jsonpath='{range .items[*]}{.kind}={.metadata.resourceVersion} {end}'
}
reapply_is_noop() {
  local before after
  before=$(versions "$1") || return 1
  clean kubectl apply --server-side --field-manager=deploy-test -n "$1" -f deploy/rbac.yaml -f deploy/runtime-api.yaml || return 1
  after=$(versions "$1") || return 1
  [[ $before == "$after" ]] || { printf 'changed:\n  %s\n  %s\n' "$before" "$after"; return 1; }
}
check "re-applying changes nothing (same Deployment generation, same resourceVersions)" reapply_is_noop "$NS"

# ------------------------------------------------------------- 3. the chart ----
HELM_LOG="$TMP/helm-build.log"
if ! HELM=$(scripts/helm.sh 2>"$HELM_LOG"); then
  fail "build Helm (scripts/helm.sh)" "$(tail -n 20 "$HELM_LOG")"
  echo; echo "$PASSED passed, $FAILED failed"; exit 1
fi
pass "Helm $("$HELM" version --short) ($HELM)"
CHART=charts/runtime-api
template() { "$HELM" template "$RELEASE" "$CHART" --namespace "$CHART_NS" --kube-version "$KUBE_VERSION" "$@"; }
render() { local out=$1; shift; template "$@" >"$out"; }   # OUT [helm args...]
# field TEMPLATE JSONPATH [helm args...]: a field of one rendered object.
field() {
  local t=$1 jp=$2; shift 2
  template --show-only "templates/$t" "$@" | kubectl create --dry-run=client -f - -o jsonpath="$jp"
}
kinds() { grep -h '^kind: ' "$@" | sort | uniq | awk '{ printf "%s%s", sep, $2; sep = " " }'; }

check "helm lint --strict" "$HELM" lint --strict "$CHART" --namespace "$CHART_NS"
check "helm template (default values)" render "$TMP/default.yaml"
check "default render: the expected objects" equals \
  "ConfigMap Deployment PodDisruptionBudget Role RoleBinding Secret Service ServiceAccount" kinds "$TMP/default.yaml"
check "dry-run apply of the default render" dry_run "$CHART_NS" "$TMP/default.yaml"

cat >"$TMP/all.yaml" <<EOF
replicaCount: 3
image: {digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"}
existingSecret: openhands-runtime-api
existingSecretKey: key
ingress:
  enabled: true
  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 1m}
  tls: [{secretName: runtime-api-tls, hosts: [runtime-api.example.com]}]
serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
podDisruptionBudget: {maxUnavailable: 1}
extraEnv: [{name: EXTRA, value: "1"}]
topologySpread: {whenUnsatisfiable: DoNotSchedule}
config:
  appServerUrl: http://openhands.openhands.svc.cluster.local:3000
  appServerPublicUrl: https://openhands.example.com
  routingMode: path
  ingressTlsSecret: sandbox-tls
  ingressAnnotations: {nginx.ingress.kubernetes.io/proxy-read-timeout: "3600", a.example/b: c}
  runtimeClasses: [gvisor, sysbox-runc]
  imagePullSecrets: [regcred]
  insecureRegistries: registry.local:5000
  caCertSecret: corporate-ca
  caCertSecretKey: bundle.pem
  k8sOperationTimeout: 2m
  k8sQueryTimeout: 15s
  logLevel: debug
  workspaceStorageSize: 10Gi
  workspaceStorageClass: standard
  sandboxPodLabels: {team: agents}
  sandboxNodeSelector: {pool: sandboxes, zone: a}
  maxBodyBytes: 2097152
  rotateSessionKeyOnResume: true
  serverPort: 9090
EOF
check "helm template (every option on)" render "$TMP/all-rendered.yaml" -f "$TMP/all.yaml"
check "every option on: Ingress and ServiceMonitor rendered, no Secret (existingSecret)" equals \
  "ConfigMap Deployment Ingress PodDisruptionBudget Role RoleBinding Service ServiceAccount ServiceMonitor" \
  kinds "$TMP/all-rendered.yaml"
if kubectl get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
  check "every option on: dry-run apply" dry_run "$CHART_NS" "$TMP/all-rendered.yaml"
else
  check "helm template (every option on but the ServiceMonitor: no CRD in this cluster)" \
    render "$TMP/all-nosm.yaml" -f "$TMP/all.yaml" --set serviceMonitor.enabled=false
  check "every option on: dry-run apply (without the ServiceMonitor)" dry_run "$CHART_NS" "$TMP/all-nosm.yaml"
fi
check "every option on: config rendered as the service reads it (lists, maps, whole numbers, booleans)" equals \
  "gvisor,sysbox-runc|pool=sandboxes,zone=a|a.example/b=c,nginx.ingress.kubernetes.io/proxy-read-timeout=3600|team=agents|2097152|true|9090|path|http://openhands.openhands.svc.cluster.local:3000|10Gi|registry.local:5000|regcred|bundle.pem|2m|15s|debug" \
  field configmap.yaml '{.data.RUNTIME_CLASSES}|{.data.SANDBOX_NODE_SELECTOR}|{.data.INGRESS_ANNOTATIONS}|{.data.SANDBOX_POD_LABELS}|{.data.MAX_BODY_BYTES}|{.data.ROTATE_SESSION_KEY_ON_RESUME}|{.data.SERVER_PORT}|{.data.ROUTING_MODE}|{.data.APP_SERVER_URL}|{.data.WORKSPACE_STORAGE_SIZE}|{.data.INSECURE_REGISTRIES}|{.data.IMAGE_PULL_SECRETS}|{.data.CA_CERT_SECRET_KEY}|{.data.K8S_OPERATION_TIMEOUT}|{.data.K8S_QUERY_TIMEOUT}|{.data.LOG_LEVEL}' \
  -f "$TMP/all.yaml"
check "every option on: container port follows config.serverPort, API key from existingSecret, image by digest" equals \
  "9090 openhands-runtime-api/key ghcr.io/openhands/runtime-api@sha256:0000000000000000000000000000000000000000000000000000000000000000 3" \
  field deployment.yaml '{.spec.template.spec.containers[0].ports[0].containerPort} {.spec.template.spec.containers[0].env[?(@.name=="API_KEY")].valueFrom.secretKeyRef.name}/{.spec.template.spec.containers[0].env[?(@.name=="API_KEY")].valueFrom.secretKeyRef.key} {.spec.template.spec.containers[0].image} {.spec.replicas}' \
  -f "$TMP/all.yaml"

# Gateway mode: the service forwards sandbox traffic itself; one wildcard Ingress (or a
# LoadBalancer Service) in front of its gateway port, and no Ingress per sandbox.
GW=(--set config.routingMode=gateway --set config.ingressTlsSecret=sandbox-tls)
check "gateway mode: render" render "$TMP/gateway.yaml" "${GW[@]}"
check "gateway mode: the objects (a gateway Service and one wildcard Ingress added)" equals \
  "ConfigMap Deployment Ingress PodDisruptionBudget Role RoleBinding Secret Service ServiceAccount" kinds "$TMP/gateway.yaml"
check "gateway mode: the Ingress sends *.{baseDomain} and {baseDomain} to the gateway Service" equals \
  "*.sandbox.example.com sandbox.example.com|$CHART_NAME-gateway gateway|sandbox-tls" \
  field gateway-ingress.yaml '{.spec.rules[*].host}|{.spec.rules[1].http.paths[0].backend.service.name} {.spec.rules[0].http.paths[0].backend.service.port.name}|{.spec.tls[0].secretName}' "${GW[@]}"
check "gateway mode: the Deployment exposes the gateway port" equals "gateway 8081" \
  field deployment.yaml '{.spec.template.spec.containers[0].ports[1].name} {.spec.template.spec.containers[0].ports[1].containerPort}' "${GW[@]}"
check "gateway mode: the gateway Service targets it by name" equals "ClusterIP gateway" \
  field gateway-service.yaml '{.spec.type} {.spec.ports[0].targetPort}' "${GW[@]}"
check "gateway mode: ROUTING_MODE and GATEWAY_PORT in the ConfigMap" equals "gateway 8081" \
  field configmap.yaml '{.data.ROUTING_MODE} {.data.GATEWAY_PORT}' "${GW[@]}"
check "gateway mode: dry-run apply" dry_run "$CHART_NS" "$TMP/gateway.yaml"
check "gateway mode behind a LoadBalancer: no Ingress at all" equals \
  "ConfigMap Deployment PodDisruptionBudget Role RoleBinding Secret Service ServiceAccount" \
  kinds <(template "${GW[@]}" --set gateway.service.type=LoadBalancer --set gateway.ingress.enabled=false)
check "gateway mode behind a LoadBalancer: the gateway Service's type" equals "LoadBalancer gateway" \
  field gateway-service.yaml '{.spec.type} {.spec.ports[0].targetPort}' "${GW[@]}" --set gateway.service.type=LoadBalancer --set gateway.ingress.enabled=false
check "other modes: no gateway objects" equals "0" \
  bash -c "grep -c 'runtime-api-gateway' '$TMP/default.yaml' || true"

# Sandboxes in another namespace: the Role and RoleBinding go there, bound to the release's SA.
other_namespace_fields() { # NAMESPACE
  local a b c
  a=$(field role.yaml '{.metadata.namespace}' --set config.namespace="$1") || return 1
  b=$(field rolebinding.yaml '{.metadata.namespace} {.subjects[0].namespace}' --set config.namespace="$1") || return 1
  c=$(field deployment.yaml '{.spec.template.spec.containers[0].env[?(@.name=="NAMESPACE")].value}' --set config.namespace="$1") || return 1
  echo "$a $b $c"
}
check "config.namespace=$NS: render" render "$TMP/other-ns.yaml" --set config.namespace="$NS"
check "config.namespace=$NS: Role and RoleBinding in $NS, subject in $CHART_NS, NAMESPACE=$NS" equals \
  "$NS $NS $CHART_NS $NS" \
  other_namespace_fields "$NS"
check "config.namespace=$NS: dry-run apply" \
  clean kubectl apply --server-side --dry-run=server --field-manager=deploy-test -f "$TMP/other-ns.yaml"

unknown_key_fails() {
  local out
  if out=$("$HELM" template x "$CHART" --set config.noSuchSetting=1 2>&1); then echo "rendered anyway"; return 1; fi
  grep -q 'config.noSuchSetting is not a setting of the runtime API' <<<"$out" || { echo "$out"; return 1; }
}
check "an unknown config key fails the render with a clear message" unknown_key_fails
# Drift guard: every setting the service reads (src/config/, but the original service's names in
# src/config/original.rs: reachable through extraEnv) is under `config:` of the chart. It fails
# when it finds too few settings (it once read a file that had moved, and passed).
settings_covered() {
  local names missing=() e wanted
  names=$(sed -n '/define "runtime-api.configEnvNames"/,/^{{- end }}/p' "$CHART/templates/_helpers.tpl" | awk 'NF == 2 { print $2 }')
  wanted=$(grep -rhoE 'env = "[A-Z0-9_]+"' --exclude=original.rs src/config/ | cut -d'"' -f2 | sort -u)
  (($(wc -l <<<"$wanted") >= 40)) || { echo "found only $(wc -l <<<"$wanted") settings in src/config/: $wanted"; return 1; }
  for e in $wanted; do
    case $e in API_KEY | POD_NAME) continue ;; esac   # from the Secret / the downward API
    grep -qx "$e" <<<"$names" || missing+=("$e")
  done
  none "not in the chart's config" "${missing[@]}"
}
check "the chart's config covers every setting of src/config/ (API_KEY, POD_NAME set by the Deployment)" settings_covered
no_empty_settings() {
  local out; out=$(field configmap.yaml '{.data}')
  if grep -Eo '"(APP_SERVER_URL|APP_SERVER_PUBLIC_URL|INGRESS_TLS_SECRET|INGRESS_ANNOTATIONS|WORKSPACE_STORAGE_SIZE|RUNTIME_CLASSES|CA_CERT_SECRET|STATE_DIR|PROCESS_AGENT_COMMAND|NAMESPACE)"' <<<"$out"; then return 1; fi
  grep -q '"[A-Z_0-9]*":""' <<<"$out" && { echo "empty value in $out"; return 1; }
  return 0
}
check "default render: empty optional settings are left out of the ConfigMap (an empty value is a value)" no_empty_settings

# A real apply of the default render.
secret_length() { # NAMESPACE NAME: length of the API_KEY stored in the Secret
  local k; k=$(kubectl get secret "$2" -n "$1" -o jsonpath='{.data.API_KEY}') || return 1
  printf '%s' "$k" | base64 -d | wc -c | tr -d ' '
}
check "apply of the default render" clean kubectl apply --server-side --field-manager=deploy-test -n "$CHART_NS" -f "$TMP/default.yaml"
check "chart objects exist: ServiceAccount, Role, RoleBinding, Secret, ConfigMap, Deployment, Service, PodDisruptionBudget" \
  kubectl get -n "$CHART_NS" serviceaccount/$CHART_NAME role/$CHART_NAME rolebinding/$CHART_NAME secret/$CHART_NAME \
    configmap/$CHART_NAME deployment/$CHART_NAME service/$CHART_NAME poddisruptionbudget/$CHART_NAME
check "chart Role rules are identical to deploy/rbac.yaml's (as stored by the API server)" \
  equals "$(kubectl get role runtime-api -n "$NS" -o jsonpath='{.rules}')" kubectl get role "$CHART_NAME" -n "$CHART_NS" -o jsonpath='{.rules}'
check_permissions "$CHART_NS" "$CHART_NAME" "$CHART_NS" "chart"
check "chart: generated API key is 48 characters" \
  equals 48 secret_length "$CHART_NS" "$CHART_NAME"
check "chart: SERVICE_POD_LABELS are the release's pod selector labels" \
  equals "app.kubernetes.io/name=runtime-api,app.kubernetes.io/instance=$RELEASE" \
  kubectl get configmap "$CHART_NAME" -n "$CHART_NS" -o jsonpath='{.data.SERVICE_POD_LABELS}'
CSEL="app.kubernetes.io/name=runtime-api,app.kubernetes.io/instance=$RELEASE"
check "chart: Deployment rolls out (Pod Security restricted enforced)" \
  kubectl rollout status -n "$CHART_NS" "deployment/$CHART_NAME" --timeout="$ROLLOUT_TIMEOUT"
eventually 30 "chart: the 2 pods are Ready on 2 different nodes" pods_ready_on_distinct_nodes "$CHART_NS" "$CSEL" 2
eventually 30 "chart: Service has 2 ready endpoints on port 8080" ready_endpoints "$CHART_NS" "$CHART_NAME" 2 8080
eventually 30 "chart: PodDisruptionBudget allows 1 disruption" \
  equals "2 1" kubectl get pdb "$CHART_NAME" -n "$CHART_NS" -o jsonpath='{.status.currentHealthy} {.status.disruptionsAllowed}'

# helm install / upgrade for real (another release in the same namespace): NOTES.txt renders, the
# generated API key survives an upgrade (lookup), a config change rolls the pods (checksum).
KEEP=keep-runtime-api
helm_keep() { "$HELM" "$1" keep "$CHART" --namespace "$CHART_NS" --set replicaCount=1 --set podDisruptionBudget.enabled=false "${@:2}"; }
installed_with_notes() { local out; out=$(helm_keep install) || { echo "$out"; return 1; }; grep -q "remote_runtime_api_url" <<<"$out" || { echo "$out"; return 1; }; }
check "helm install (a second release): installs and prints NOTES.txt" installed_with_notes
KEY1=$(kubectl get secret "$KEEP" -n "$CHART_NS" -o jsonpath='{.data.API_KEY}' 2>/dev/null)
SUM1=$(kubectl get deployment "$KEEP" -n "$CHART_NS" -o jsonpath='{.spec.template.metadata.annotations.checksum/config}' 2>/dev/null)
check "helm upgrade with another config.logFormat" helm_keep upgrade --set config.logFormat=text
check "helm upgrade keeps the generated API key" \
  equals "$KEY1" kubectl get secret "$KEEP" -n "$CHART_NS" -o jsonpath='{.data.API_KEY}'
changed_checksum() {
  local sum; sum=$(kubectl get deployment "$KEEP" -n "$CHART_NS" -o jsonpath='{.spec.template.metadata.annotations.checksum/config}') || return 1
  [[ -n $SUM1 && $sum != "$SUM1" ]] || { echo "checksum/config: '$SUM1' -> '$sum'"; return 1; }
}
check "helm upgrade: the config change rolls the pods (checksum/config moved)" changed_checksum
check "helm uninstall" "$HELM" uninstall keep --namespace "$CHART_NS"

# ---------------------------------------------------------------- cleanup ----
gone() { # NAMESPACE: the API server says NotFound (not merely "cannot ask")
  local out; out=$(kubectl get namespace "$1" -o name 2>&1) && return 1
  grep -q '(NotFound)' <<<"$out" || { echo "$out"; return 1; }
}
both_gone() { gone "$NS" && gone "$CHART_NS" || { kubectl get namespace "$NS" "$CHART_NS" --ignore-not-found 2>&1; return 1; }; }
check "delete the test namespaces" kubectl delete namespace "$NS" "$CHART_NS" --wait=false
eventually 120 "the test namespaces are gone" both_gone

echo
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
