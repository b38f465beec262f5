#!/usr/bin/env bash
# End-to-end on a real kind cluster: build and load both images, install the chart, apply the examples, and check
# network Ready, database "Ready To Use" (a real MySQL pod), VPN gateways running with their Services, a Readdress
# migration Completed, and cleanup on delete. Needs Docker, kind, kubectl and helm; run by .github/workflows/e2e.yml.
# The same scenario runs without Docker in the ordinary suite (tests/playground.rs, tests/database_migration.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is required (this suite needs Docker; the ordinary tests do not)" >&2; exit 1; }
done
cluster=${CLUSTER:-appdb-e2e}
kind create cluster --name "$cluster" --wait 120s
trap 'kind delete cluster --name "$cluster"' EXIT
docker build -t appdb-operator:e2e .
docker build -t appdb-vpn-gateway:e2e --target vpn-gateway .
kind load docker-image appdb-operator:e2e appdb-vpn-gateway:e2e --name "$cluster"
kubectl apply --server-side -f crds/
helm install appdb-operator charts/appdb-operator --namespace appdb-system --create-namespace \
  --set image.repository=appdb-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set vpn.gatewayImage=appdb-vpn-gateway:e2e --set vpn.exposure=host-network --set vpn.datapath=userspace \
  --set leaderElection.enabled=true
kubectl -n appdb-system rollout status deployment/appdb-operator --timeout=180s

# The examples, with the migration moved to two minutes from now and the documentation gateway allowed.
kubectl -n appdb-system set env deployment/appdb-operator APPDB_ALLOW_DOCUMENTATION_GATEWAYS=true
kubectl -n appdb-system rollout status deployment/appdb-operator --timeout=180s
for f in examples/acme/00-namespace.yaml examples/acme/10-network.yaml examples/acme/20-database.yaml examples/acme/30-vpn.yaml; do
  kubectl apply --server-side -f "$f"
done
kubectl -n acme wait --for=condition=Ready pnet/prod pnet/prod-2026 --timeout=60s
kubectl -n acme wait --for=jsonpath='{.status.state}'='Ready To Use' adb/orders --timeout=600s
kubectl -n acme rollout status deployment/seattle-tunnel1 --timeout=300s
kubectl -n acme get svc seattle-tunnel1 seattle-tunnel2
when=$(date -u -d '+2 minutes' +%Y-%m-%dT%H:%M:%SZ)
sed "s/scheduledAt: .*/scheduledAt: \"$when\"/" examples/acme/40-migration.yaml | kubectl apply --server-side -f -
kubectl -n acme wait --for=jsonpath='{.status.state}'=Completed dbmig/orders-to-prod-2026 --timeout=600s
test "$(kubectl -n acme get adb orders -o jsonpath='{.status.network}')" = prod-2026
kubectl -n acme wait --for=delete pnet/prod vpn/seattle --timeout=180s

# Cleanup on delete: the database's children go with it.
kubectl -n acme delete adb orders --timeout=180s
! kubectl -n acme get sts orders 2>/dev/null
echo "e2e: passed"
