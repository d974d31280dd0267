#!/usr/bin/env bash
# One-command local demo on this machine, no cluster needed: a real kube-apiserver + etcd
# (found by hack/assets.sh), the project's fake Leen, and the operator. It creates a
# LeenConnection, shows it Ready, deletes it, and prints what the finalizer recorded and
# the DELETE that Leen received. Everything is stopped and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "demo: $*" >&2; exit 1; }
for tool in kubectl openssl curl cargo; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
KUBEBUILDER_ASSETS=$(hack/assets.sh) || exit 1
[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -e "$KUBEBUILDER_ASSETS/etcd" ] || die "$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd"

echo "== building"
cargo build --quiet --workspace --bins

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
wait_http() { # URL [curl options]
  local url=$1; shift
  # Two minutes: a kube-apiserver takes seconds on an idle machine, much longer on a busy one.
  local deadline=$((SECONDS + 120))
  while [ "$SECONDS" -lt "$deadline" ]; do
    curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$url did not come up; logs in $work"
}

echo "== starting etcd and kube-apiserver"
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); metrics_port=$(free_port)
"$KUBEBUILDER_ASSETS/etcd" --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" --unsafe-no-fsync >"$work/etcd.log" 2>&1 &
pids+=($!)
openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
token=demo-admin-token
echo "$token,admin,admin,system:masters" >"$work/tokens.csv"
"$KUBEBUILDER_ASSETS/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" --cert-dir "$work/certs" \
  --secure-port "$api_port" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --service-cluster-ip-range 10.0.0.0/24 --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$work/sa.key" --service-account-signing-key-file "$work/sa.key" \
  --token-auth-file "$work/tokens.csv" --authorization-mode RBAC --allow-privileged=true \
  >"$work/kube-apiserver.log" 2>&1 &
pids+=($!)
wait_http "https://127.0.0.1:$api_port/readyz" -k -H "Authorization: Bearer $token"
export KUBECONFIG="$work/kubeconfig"
cat >"$KUBECONFIG" <<CFG
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: $token}}]
contexts: [{name: demo, context: {cluster: demo, user: admin}}]
current-context: demo
CFG

echo "== installing the CRDs"
# --validate=false: kubectl's client-side check does not know x-kubernetes-validations on
# API servers older than 1.25; the server itself accepts the CRD.
kubectl apply --validate=false -f crds/
kubectl wait --for condition=established crd/leenconnections.leen.dev crd/leenorganizations.leen.dev \
  crd/clusterleenorganizations.leen.dev --timeout=60s >/dev/null

echo "== starting the fake Leen with connection 0b9e7a52-... and the operator"
target/debug/fake-leen --api-key demo-key \
  --connection 6f1c2d4e-0000-4000-8000-000000000001:0b9e7a52-0000-4000-8000-000000000002:CrowdStrike \
  >"$work/fake.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/fake.out" ] && break; sleep 0.1; done
endpoint=$(head -n1 "$work/fake.out")
echo "fake Leen at $endpoint"
LEEN_ENDPOINT=$endpoint LEEN_API_KEY=demo-key LEEN_DEFAULT_KEY_NAMESPACES=security METRICS_ADDR=127.0.0.1:$metrics_port \
  target/debug/leen-operator >"$work/operator.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$metrics_port/readyz"

echo "== kubectl apply -f examples/leenconnection.yaml"
kubectl create namespace security >/dev/null
kubectl apply -f examples/leenconnection.yaml
kubectl wait --for=condition=Ready leenconn/crowdstrike-prod -n security --timeout=60s
kubectl get leenconn -n security
kubectl get leenconn -n security -o wide

echo "== kubectl delete leenconn crowdstrike-prod"
kubectl get leenconn crowdstrike-prod -n security --watch \
  -o 'jsonpath=deleting={.metadata.deletionTimestamp}{"  finalizers="}{.metadata.finalizers}{"  state="}{.status.state}{"  health="}{.status.health.name}/{.status.health.status}{"  ready="}{.status.conditions[0].status}/{.status.conditions[0].reason}{"\n"}' \
  >"$work/watch.txt" 2>/dev/null &
watch_pid=$!
pids+=("$watch_pid")
sleep 1 # let the watch start before the delete
kubectl delete leenconn crowdstrike-prod -n security --timeout=60s
sleep 0.5
kill "$watch_pid" 2>/dev/null || true

echo "== what a watch saw (finalizers, then status) while the resource was deleted"
cat "$work/watch.txt"
echo "== Events"
kubectl get events.events.k8s.io -n security -o 'jsonpath={range .items[*]}{.type}{"\t"}{.reason}{"\t"}{.note}{"\n"}{end}'
echo "== requests Leen received"
curl -fsS "${endpoint%/v1}/_fake/requests" | sed 's/},{/}\n{/g; s/"api_key":"[^"]*"/"api_key":"<hidden>"/g'
echo
echo "== operator metrics (deletions, Leen requests)"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^leen_operator_(deletions_total|leen_requests_total)'
echo "== done; stopping everything"
