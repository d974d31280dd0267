#!/usr/bin/env bash
# The demo as a cluster install does it, on this machine (root): a real one-node cluster
# (../shared/envtest/node, or LEEN_NODE_DIR), the operator's image built by hack/image.sh
# and imported into the node's containerd, the chart installed with helm, and the fake Leen
# serving https inside the node's network namespace with a test CA that the chart trusts
# through leen.ca.configMap. It creates a LeenConnection, shows it Ready, deletes it, and
# prints the pods, the Events and the requests Leen received. Everything is stopped at the
# end (the node's logs stay in the printed folder).
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "a real node needs root (network namespaces, containerd)"
node=${LEEN_NODE_DIR:-../shared/envtest/node}
[ -x "$node/up.sh" ] || die "no node scripts at $node (set LEEN_NODE_DIR)"
helm=${HELM:-$(hack/get-helm.sh)}

work=$(mktemp -d)
fake_pid=""
cleanup() {
  [ -z "$fake_pid" ] || kill "$fake_pid" 2>/dev/null || true
  "$node/down.sh" "$work/node" >/dev/null 2>&1 || true
  echo "demo: node logs in $work/node/logs"
}
trap cleanup EXIT

echo "== building the image (hack/image.sh) and the fake Leen"
ref=$(hack/image.sh "$work/image.tar" 2>"$work/image.log" | tail -n1)
grep -E '^(size|packages):' "$work/image.log"
cargo build --quiet --release -p fake-leen

echo "== starting a one-node cluster"
eval "$("$node/up.sh" "$work/node")"
kubectl get nodes
nsenter --net="$LEEN_NODE_NETNS" ctr --address "$LEEN_NODE_CONTAINERD" -n k8s.io images import "$work/image.tar" >/dev/null

echo "== the fake Leen over https at $LEEN_NODE_IP:8443 (test CA in $work/leen-ca.pem)"
nsenter --net="$LEEN_NODE_NETNS" target/release/fake-leen --addr 0.0.0.0:8443 --public \
  --tls-ca "$work/leen-ca.pem" --tls-ip "$LEEN_NODE_IP" --api-key demo-key \
  --connection 6f1c2d4e-0000-4000-8000-000000000001:0b9e7a52-0000-4000-8000-000000000002:CrowdStrike \
  >"$work/fake.out" 2>&1 &
fake_pid=$!
for _ in $(seq 1 100); do [ -s "$work/leen-ca.pem" ] && break; sleep 0.1; done
endpoint="https://$LEEN_NODE_IP:8443/v1"

echo "== helm install (image $ref)"
kubectl create namespace leen-system >/dev/null
kubectl create configmap leen-ca -n leen-system --from-file=ca.crt="$work/leen-ca.pem" >/dev/null
"$helm" install leen-operator charts/leen-operator -n leen-system \
  --set image.repository="${ref%:*}" --set image.tag="${ref##*:}" \
  --set leen.endpoint="$endpoint" --set leen.ca.configMap=leen-ca \
  --set leen.apiKey=demo-key --set 'leen.defaultKeyNamespaces={security}' \
  --wait --timeout 3m >/dev/null
kubectl get pods -n leen-system -o wide

echo "== kubectl apply -f examples/leenconnection.yaml"
kubectl create namespace security >/dev/null
kubectl apply -f examples/leenconnection.yaml
kubectl wait --for=condition=Ready leenconn/crowdstrike-prod -n security --timeout=120s
kubectl get leenconn -n security -o wide

echo "== kubectl delete leenconn crowdstrike-prod"
kubectl delete leenconn crowdstrike-prod -n security --timeout=120s
echo "== Events"
kubectl get events.events.k8s.io -n security -o 'jsonpath={range .items[*]}{.type}{"\t"}{.reason}{"\t"}{.note}{"\n"}{end}'
echo "== requests Leen received (over https, from the pod)"
curl -fsS --cacert "$work/leen-ca.pem" "https://$LEEN_NODE_IP:8443/_fake/requests" \
  | sed 's/},{/}\n{/g; s/"api_key":"[^"]*"/"api_key":"<hidden>"/g'
echo
echo "== done; stopping everything"
