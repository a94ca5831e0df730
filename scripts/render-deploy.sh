#!/usr/bin/env bash
# scripts/render-deploy.sh - writes the plain manifests of deploy/ from the Helm chart, so that a
# setting or a permission is added in one place (charts/runtime-api) and both stay the same.
#
#   scripts/render-deploy.sh           # rewrite deploy/*.yaml
#   scripts/render-deploy.sh --check   # exit 1 and show the diff if deploy/ is not the render
#
# The chart is rendered with deploy/render/values.yaml (plainManifests: no namespace, which
# `kubectl apply -n` chooses; no Helm labels; the API key from a Secret `runtime-api` made by
# hand), for the release name `runtime-api`, and split into the four files deploy/README.md
# describes. Only the header comment of each file lives here. Needs go (Helm: scripts/helm.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=render-deploy
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

CHECK=0
case ${1:-} in
  --check) CHECK=1 ;;
  "") ;;
  *) die "usage: $0 [--check]" ;;
esac

HELM=$("$ROOT/scripts/helm.sh")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# render FILE TEMPLATE...: the header (stdin), then each template's objects, `---` between them.
render() {
  local file=$1 first=1 t
  shift
  cat >"$OUT/$file"
  for t in "$@"; do
    ((first)) || echo '---' >>"$OUT/$file"
    first=0
    "$HELM" template runtime-api "$ROOT/charts/runtime-api" -f "$ROOT/deploy/render/values.yaml" \
      --show-only "templates/$t.yaml" | sed -e '/^---$/d' -e '/^# Source: /d' >>"$OUT/$file"
  done
}

render rbac.yaml serviceaccount role rolebinding <<'EOF'
# GENERATED from charts/runtime-api by scripts/render-deploy.sh: edit the chart, then run it.
#
# Namespace-scoped permissions of the runtime API: exactly what it uses, in the sandbox namespace
# only. Apply with `kubectl apply -n <namespace> -f deploy/rbac.yaml` (tests/deploy/apply.sh does).
EOF

render runtime-api.yaml configmap deployment service pdb <<'EOF'
# GENERATED from charts/runtime-api by scripts/render-deploy.sh: edit the chart, then run it.
#
# The runtime API itself: settings (ConfigMap), two replicas (Deployment), a ClusterIP Service and a
# PodDisruptionBudget. Needs deploy/rbac.yaml (ServiceAccount `runtime-api`) in the same namespace
# and a Secret `runtime-api` with the API key, which is deliberately NOT in this file (no default
# key can leak into a deployment); create it once:
#
#   kubectl create secret generic runtime-api -n openhands --from-literal=API_KEY="$(openssl rand -hex 32)"
#
# Until it exists the pods stay in CreateContainerConfigError (fail closed). Then:
#
#   kubectl apply -n openhands -f deploy/rbac.yaml -f deploy/runtime-api.yaml
#
# Sandboxes are created in the namespace the service runs in (NAMESPACE comes from the downward
# API). Every variable of the README's configuration table can go in the ConfigMap; leave a
# setting out rather than setting it to "". After editing the ConfigMap, roll the pods:
# `kubectl rollout restart -n openhands deployment/runtime-api`. See deploy/README.md.
EOF

render ingress.yaml ingress <<'EOF'
# GENERATED from charts/runtime-api by scripts/render-deploy.sh: edit the chart, then run it.
#
# Optional: expose the runtime API itself outside the cluster (OpenHands running elsewhere).
# Not needed when the OpenHands app server runs in the same cluster: it can use the Service,
# http://runtime-api.<namespace>.svc.cluster.local. Replace the host and the TLS Secret
# (placeholders); the API is protected by its key (X-API-Key), but consider restricting source
# ranges at the controller.
#
#   kubectl apply -n openhands -f deploy/ingress.yaml
EOF

render servicemonitor.yaml servicemonitor <<'EOF'
# GENERATED from charts/runtime-api by scripts/render-deploy.sh: edit the chart, then run it.
#
# Optional: Prometheus Operator scrape configuration for /metrics (no key needed on that path).
# Needs the monitoring.coreos.com/v1 ServiceMonitor CRD (Prometheus Operator / kube-prometheus-stack);
# without it `kubectl apply` fails with "no matches for kind ServiceMonitor". Your Prometheus may
# also select ServiceMonitors by a label (e.g. `release: kube-prometheus-stack`): add it there.
#
#   kubectl apply -n openhands -f deploy/servicemonitor.yaml
EOF

if ((CHECK)); then
  rc=0
  for f in "$OUT"/*.yaml; do
    diff -u "$ROOT/deploy/$(basename "$f")" "$f" || rc=1
  done
  ((rc == 0)) || die "deploy/ differs from the chart's render: run scripts/render-deploy.sh"
  log "deploy/ is the chart's render"
else
  cp "$OUT"/*.yaml "$ROOT/deploy/"
  log "wrote deploy/{rbac,runtime-api,ingress,servicemonitor}.yaml"
fi
