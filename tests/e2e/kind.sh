#!/usr/bin/env bash
# End-to-end on a real kind cluster (three nodes, tests/e2e/kind-config.yaml): build and load both images, install
# the chart, apply the examples, and check network Ready, database "Ready To Use" (a real MySQL pod), both VPN
# gateways running on different nodes with their Services, a Readdress migration Completed, and cleanup on delete.
# Needs Docker, kind, kubectl and helm; run by .github/workflows/e2e.yml with pinned versions.
# When a step fails, the operator's and the gateways' logs, every appdb object, the namespace's Events and pods are
# written to $ARTIFACTS (default ./e2e-artifacts) for the workflow to upload.
# The same scenario runs without Docker in the ordinary suite (tests/pod_e2e.rs on real pods, tests/playground.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is required (this suite needs Docker; the ordinary tests do not)" >&2; exit 1; }
done
cluster=${CLUSTER:-appdb-e2e}
artifacts=${ARTIFACTS:-$PWD/e2e-artifacts}
node_image=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}

collect() {
  mkdir -p "$artifacts"
  kubectl get nodes -o wide >"$artifacts/nodes.txt" 2>&1 || true
  kubectl get appdb -A -o yaml >"$artifacts/appdb-objects.yaml" 2>&1 || true
  kubectl get pods,svc,sts,deploy,jobs,networkpolicies -A -o wide >"$artifacts/workloads.txt" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$artifacts/events.txt" 2>&1 || true
  kubectl -n appdb-system logs deployment/appdb-operator --all-containers --prefix >"$artifacts/operator.log" 2>&1 || true
  kubectl -n appdb-system logs deployment/appdb-operator --all-containers --prefix --previous >"$artifacts/operator-previous.log" 2>&1 || true
  for pod in $(kubectl -n acme get pods -l appdb.dev/role=vpn-gateway -o name 2>/dev/null); do
    kubectl -n acme logs "$pod" --all-containers --prefix >"$artifacts/$(basename "$pod").log" 2>&1 || true
  done
  echo "e2e: failed; logs and objects are in $artifacts" >&2
}
finish() {
  status=$?
  [ "$status" -eq 0 ] || collect
  kind delete cluster --name "$cluster" || true
  exit "$status"
}

# Fails the run when the object still exists (`! kubectl get …` cannot fail a script under `set -e`).
absent() {
  if kubectl "$@" >/dev/null 2>&1; then
    echo "e2e: still present: kubectl $*" >&2
    return 1
  fi
}

kind create cluster --name "$cluster" --image "$node_image" --config tests/e2e/kind-config.yaml --wait 180s
trap finish EXIT
docker build -t appdb-operator:e2e --target operator .
docker build -t appdb-vpn-gateway:e2e --target vpn-gateway .
kind load docker-image appdb-operator:e2e appdb-vpn-gateway:e2e --name "$cluster"
kubectl apply --server-side -f crds/
helm install appdb-operator charts/appdb-operator --namespace appdb-system --create-namespace \
  --set image.repository=appdb-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set vpn.gatewayImage=appdb-vpn-gateway:e2e --set vpn.exposure=host-network --set vpn.datapath=userspace \
  --set replicaCount=2 --set-json 'extraEnv=[{"name":"APPDB_ALLOW_DOCUMENTATION_GATEWAYS","value":"true"}]' \
  --wait --timeout 5m
kubectl -n appdb-system rollout status deployment/appdb-operator --timeout=180s

# The examples, with the migration moved to two minutes from now (the documentation gateway is allowed above).
for f in examples/acme/00-namespace.yaml examples/acme/10-network.yaml examples/acme/20-database.yaml examples/acme/30-vpn.yaml; do
  kubectl apply --server-side -f "$f"
done
kubectl -n acme wait --for=condition=Ready pnet/prod pnet/prod-2026 --timeout=60s
kubectl -n acme wait --for=jsonpath='{.status.state}'='Ready To Use' adb/orders --timeout=600s
kubectl -n acme rollout status deployment/seattle-tunnel1 --timeout=300s
kubectl -n acme rollout status deployment/seattle-tunnel2 --timeout=300s
kubectl -n acme get svc seattle-tunnel1 seattle-tunnel2
nodes=$(kubectl -n acme get pods -l appdb.dev/role=vpn-gateway -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)
test "$nodes" -eq 2 || { echo "e2e: the two tunnels' gateways share a node" >&2; exit 1; }
when=$(date -u -d '+2 minutes' +%Y-%m-%dT%H:%M:%SZ)
sed "s/scheduledAt: .*/scheduledAt: \"$when\"/" examples/acme/40-migration.yaml | kubectl apply --server-side -f -
kubectl -n acme wait --for=jsonpath='{.status.state}'=Completed dbmig/orders-to-prod-2026 --timeout=600s
test "$(kubectl -n acme get adb orders -o jsonpath='{.status.network}')" = prod-2026
kubectl -n acme wait --for=delete pnet/prod vpn/seattle --timeout=180s

# Cleanup on delete: the database's children go with it.
kubectl -n acme delete adb orders --timeout=180s
for _ in $(seq 120); do
  # An assignment fails the script when kubectl fails; a test of "$(kubectl …)" would not.
  left=$(kubectl -n acme get statefulsets -l appdb.dev/database=orders -o name)
  [ -z "$left" ] && break
  sleep 1
done
test -z "$left" || { echo "e2e: the database's StatefulSets outlived it: $left" >&2; exit 1; }
absent -n acme get adb orders
echo "e2e: passed"
