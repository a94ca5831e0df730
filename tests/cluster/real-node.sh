#!/usr/bin/env bash
# tests/cluster/real-node.sh - proves the real node of scripts/cluster.sh runs real pods.
#
#   eval "$(scripts/cluster.sh up)"; tests/cluster/real-node.sh
#
# Needs the export lines of `up` (KUBECONFIG, RUNTIME_API_REAL_NODE, RUNTIME_API_AGENT_IMAGE,
# RUNTIME_API_DNS, ...), kubectl, curl and dig. Every pod runs on the real node (the toleration of
# its taint and a nodeSelector), from the agent-server image built by scripts/images.sh. Prints
# every check, exits non-zero if any failed, deletes its namespace, and prints the pod
# create-to-Ready figure (p50 of 10, image present) without asserting it.
set -uo pipefail

: "${KUBECONFIG:?KUBECONFIG must point at the cluster (eval \"\$(scripts/cluster.sh up)\")}"
: "${RUNTIME_API_REAL_NODE:?no real node: run scripts/cluster.sh up without CLUSTER_REAL_NODE=0}"
: "${RUNTIME_API_AGENT_IMAGE:?RUNTIME_API_AGENT_IMAGE missing from the export lines}"
: "${RUNTIME_API_DNS:?RUNTIME_API_DNS missing from the export lines}"
for c in kubectl curl dig; do command -v $c >/dev/null || { echo "$c not on PATH" >&2; exit 2; }; done

NODE=$RUNTIME_API_REAL_NODE
TAINT=${RUNTIME_API_REAL_NODE_TAINT:-runtime-api.test/real-node}
IMAGE=$RUNTIME_API_AGENT_IMAGE
REGISTRY=${RUNTIME_API_REGISTRY:-127.0.0.1:15000}
STORAGE_CLASS=${RUNTIME_API_NODE_STORAGE_CLASS:-node-local}
NS="real-$$-$RANDOM"
TMP=$(mktemp -d)

cleanup() {
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
field() { kubectl get "pod/$1" -n "$NS" -o jsonpath="$2"; }

# pod NAME [extra spec lines...]: a pod pinned to the real node; the caller's lines go under the
# container (image, command, resources...), indented by 4.
pod() {
  local name=$1; shift
  {
    cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: $NS, labels: {app: $name}}
spec:
  nodeSelector: {kubernetes.io/hostname: $NODE}
  tolerations: [{key: $TAINT, operator: Exists, effect: NoSchedule}]
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, runAsNonRoot: true,
    seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: main
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF
    printf '    %s\n' "$@"
  } | kubectl apply -f - >/dev/null
}

echo "== real node $NODE, image $IMAGE"
kubectl create namespace "$NS" >/dev/null

# ---- the node ------------------------------------------------------------------
node_ok() {
  local ready version taint
  ready=$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
  version=$(kubectl get node "$NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}')
  taint=$(kubectl get node "$NODE" -o jsonpath='{.spec.taints[*].key}')
  [[ $ready == True && $version == v1.36.* && $version == *containerd://2.* && $taint == *"$TAINT"* ]] ||
    { echo "Ready=$ready versions='$version' taints='$taint'"; return 1; }
}
check "node $NODE is Ready: a real kubelet v1.36 on containerd 2.x, tainted $TAINT" node_ok

# ---- an agent server in a pod, reached through its Service ----------------------
pod agent "image: $IMAGE" \
  'args: [--host, 0.0.0.0, --port, "8000"]' \
  'env: [{name: LITELLM_LOCAL_MODEL_COST_MAP, value: "True"}]' \
  'ports: [{containerPort: 8000, name: http}]' \
  'readinessProbe: {httpGet: {path: /alive, port: 8000}, periodSeconds: 1, failureThreshold: 120}'
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: agent, namespace: $NS}
spec:
  selector: {app: agent}
  ports: [{port: 8000, targetPort: 8000, name: http}]
EOF
pod client "image: $IMAGE" 'command: [sleep, infinity]' \
  'resources: {limits: {memory: 96Mi, cpu: 250m}, requests: {memory: 96Mi, cpu: 100m}}'

agent_ready() {
  [[ $(field agent '{.status.conditions[?(@.type=="Ready")].status}') == True ]] ||
    { echo "phase=$(field agent '{.status.phase}') $(field agent '{.status.containerStatuses[0].state}')"; return 1; }
}
eventually 180 "an agent-server pod from the image built here becomes Ready (probe /alive)" agent_ready
eventually 60 "a client pod becomes Ready" bash -c "[[ \$(kubectl get pod client -n $NS -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}') == True ]]"

in_client() { kubectl exec -n "$NS" client -- "$@"; }
uid_ok() {
  local id; id=$(kubectl exec -n "$NS" agent -- id)
  [[ $id == "uid=10001(openhands) gid=10001(openhands)"* ]] || { echo "id: $id"; return 1; }
  kubectl exec -n "$NS" agent -- grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status || { echo "NoNewPrivs is not 1"; return 1; }
}
check "the agent runs as uid/gid 10001 (openhands) with NoNewPrivs (kubectl exec through the kubelet)" uid_ok

check "GET /alive on the pod IP from this machine" \
  curl -fsS --max-time 5 "http://$(field agent '{.status.podIP}'):8000/alive"
check "GET /alive on the Service's ClusterIP from this machine (kube-proxy)" \
  curl -fsS --max-time 5 "http://$(kubectl get svc agent -n "$NS" -o jsonpath='{.spec.clusterIP}'):8000/alive"
check "GET /alive through the Service name from another pod (CoreDNS + kube-proxy)" \
  in_client curl -fsS --max-time 5 "http://agent.$NS.svc.cluster.local:8000/alive"
dns_ok() {
  local got want
  got=$(dig +short +time=2 +tries=1 "@$RUNTIME_API_DNS" "agent.$NS.svc.cluster.local")
  want=$(kubectl get svc agent -n "$NS" -o jsonpath='{.spec.clusterIP}')
  [[ $got == "$want" ]] || { echo "dig answered '$got', the ClusterIP is $want"; return 1; }
}
check "CoreDNS at $RUNTIME_API_DNS resolves the Service name from this machine" dns_ok
nxdomain() { dig +time=2 +tries=1 "@$RUNTIME_API_DNS" example.com | grep -q 'status: NXDOMAIN'; }
check "CoreDNS answers NXDOMAIN outside cluster.local (no query leaves the machine)" nxdomain

memory_limit() {
  local v; v=$(in_client cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
  [[ $v == $((96 * 1024 * 1024)) ]] || { echo "memory.limit_in_bytes=$v"; return 1; }
}
check "the client pod's 96Mi memory limit is its cgroup's memory.limit_in_bytes" memory_limit

kubectl create role pod-reader -n "$NS" --verb=get,list --resource=pods >/dev/null
kubectl create rolebinding pod-reader -n "$NS" --role=pod-reader --serviceaccount="$NS:default" >/dev/null
api_from_pod() {
  in_client sh -c 'd=/var/run/secrets/kubernetes.io/serviceaccount
    curl -fsS --max-time 5 --cacert $d/ca.crt -H "Authorization: Bearer $(cat $d/token)" \
      https://kubernetes.default.svc/api/v1/namespaces/$(cat $d/namespace)/pods' | grep -q '"name": *"agent"'
}
eventually 30 "a pod reaches the API server through the kubernetes Service with its token" api_from_pod

# ---- failures the real kubelet reports -------------------------------------------
pod no-image "image: $REGISTRY/does-not/exist:1"
pull_backoff() {
  local r; r=$(field no-image '{.status.containerStatuses[0].state.waiting.reason}')
  [[ $r == ImagePullBackOff ]] || { echo "waiting reason: '$r'"; return 1; }
}
eventually 90 "a pod whose image does not exist reaches ImagePullBackOff" pull_backoff
pod crasher "image: $IMAGE" "command: [sh, -c, 'exit 3']"
# Kubelet 1.36 requeues a crashed container's pod for the moment its back-off ends, so the status
# often shows the last `terminated` state during the back-off rather than `waiting:
# CrashLoopBackOff`: the back-off is proven by the restarts, the exit code and the kubelet's
# BackOff event.
crash_loop() {
  local s events
  s=$(kubectl get pod crasher -n "$NS" -o jsonpath='{.status.containerStatuses[0].restartCount}|{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.terminated.exitCode}{.status.containerStatuses[0].lastState.terminated.exitCode}')
  events=$(kubectl get events -n "$NS" --field-selector involvedObject.name=crasher,reason=BackOff -o name)
  IFS='|' read -r n reason code <<<"$s"
  [[ ${n:-0} -ge 2 && ${code:0:1} == 3 && -n $events ]] || { echo "restarts='$n' waiting='$reason' exit='$code' BackOff events: ${events:-none}"; return 1; }
  [[ $reason == CrashLoopBackOff || -z $reason ]] || { echo "waiting reason '$reason'"; return 1; }
}
eventually 90 "a pod whose command exits goes into CrashLoopBackOff (exit code 3, restarts, BackOff events)" crash_loop

# ---- a volume of the node's StorageClass, kept across pods ------------------------
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: work, namespace: $NS}
spec:
  storageClassName: $STORAGE_CLASS
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
EOF
# Two pods in turn on one claim: the first writes, the second reads.
cat >"$TMP/writer.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: writer, namespace: $NS}
spec:
  nodeSelector: {kubernetes.io/hostname: $NODE}
  tolerations: [{key: $TAINT, operator: Exists, effect: NoSchedule}]
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001}
  volumes: [{name: work, persistentVolumeClaim: {claimName: work}}]
  containers:
  - name: main
    image: $IMAGE
    command: [sh, -c, 'echo kept > /workspace/file && ls -ln /workspace/file']
    volumeMounts: [{name: work, mountPath: /workspace}]
EOF
sed -e 's/name: writer/name: reader/' -e "s|echo kept > /workspace/file && ls -ln /workspace/file|cat /workspace/file|" \
  "$TMP/writer.yaml" >"$TMP/reader.yaml"
kubectl apply -f "$TMP/writer.yaml" >/dev/null
succeeded() { [[ $(field "$1" '{.status.phase}') == Succeeded ]] || { echo "phase=$(field "$1" '{.status.phase}') $(kubectl logs -n "$NS" "$1" 2>&1 | tail -2)"; return 1; }; }
eventually 90 "a non-root pod (uid 10001, fsGroup 10001) writes to a $STORAGE_CLASS volume" succeeded writer
kubectl delete pod writer -n "$NS" --wait=true >/dev/null
kubectl apply -f "$TMP/reader.yaml" >/dev/null
eventually 90 "a second pod mounting the same claim runs" succeeded reader
check "the file written by the first pod is there" bash -c "[[ \$(kubectl logs -n $NS reader) == kept ]]"
pv=$(kubectl get pvc work -n "$NS" -o jsonpath='{.spec.volumeName}')
pv_path=$(kubectl get pv "$pv" -o jsonpath='{.spec.local.path}')
kubectl delete pod reader -n "$NS" --wait=true >/dev/null
kubectl delete pvc work -n "$NS" --wait=true >/dev/null
pv_gone() { ! kubectl get pv "$pv" >/dev/null 2>&1 && [[ ! -e $pv_path ]] || { echo "PV $pv or $pv_path still there"; return 1; }; }
eventually 60 "deleting the claim deletes its volume and its directory" pv_gone

# ---- figure: pod create -> Ready, image present ------------------------------------
times=()
for i in $(seq 1 10); do
  start=$(date +%s%N)
  pod "timing-$i" "image: $IMAGE" 'command: [sleep, infinity]'
  kubectl wait --for=condition=Ready "pod/timing-$i" -n "$NS" --timeout=60s >/dev/null 2>&1
  times+=($((($(date +%s%N) - start) / 1000000)))
  kubectl delete pod "timing-$i" -n "$NS" --wait=false >/dev/null
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
echo "FIGURE pod create -> Ready on the real node, 10 pods one at a time (ms, sorted): $sorted(p50 $(printf '%s\n' "${times[@]}" | sort -n | sed -n 5p) ms)"

echo "== $PASSED passed, $FAILED failed"
((FAILED == 0))
