#!/usr/bin/env bash
# Every test, on a fresh machine: finds kube-apiserver + etcd (hack/assets.sh), fetches the
# real helm (hack/get-helm.sh), makes sure Lua 5.4 + cjson and Prometheus (promtool) are
# there (installing them with apt-get when run as root), then runs `cargo test --locked`.
# Arguments are passed to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "test: $*" >&2; exit 1; }

missing=()
for tool in openssl kubectl curl npm; do command -v "$tool" >/dev/null || missing+=("$tool"); done
command -v xz >/dev/null || missing+=(xz-utils)
command -v unzip >/dev/null || missing+=(unzip)
# The cluster tier (tests/cluster.rs): hack/image.sh needs strip, python3 and the CA bundle;
# the node's own tools (containerd, runc, iptables, nsenter) are installed by up.sh.
command -v strip >/dev/null || missing+=(binutils)
command -v python3 >/dev/null || missing+=(python3)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# ... and, as root only (it runs only then), a registry in the node and skopeo to push there.
if [ "$(id -u)" = 0 ]; then
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
fi
{ command -v lua5.4 >/dev/null && lua5.4 -e 'require "cjson"' 2>/dev/null; } || missing+=(lua5.4 lua-cjson)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    pkgs=()
    for p in "${missing[@]}"; do [ "$p" = kubectl ] || pkgs+=("$p"); done
    [ ${#pkgs[@]} -eq 0 ] || { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }
  else
    die "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
  fi
fi
command -v kubectl >/dev/null || die "kubectl is required on PATH (https://kubernetes.io/docs/tasks/tools/)"

KUBEBUILDER_ASSETS=$(hack/assets.sh)
export KUBEBUILDER_ASSETS
HELM=${HELM:-$(hack/get-helm.sh)}
export HELM
echo "test: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS HELM=$HELM" >&2
if [ "$(id -u)" != 0 ]; then
  # A real node needs network namespaces and containerd: root only (CI runs as root).
  echo "test: not root, so the cluster tier (tests/cluster.rs) is skipped" >&2
  exec cargo test --locked "$@" -- --skip the_charts_pods_run_the_operator_on_a_real_node --skip the_cluster_demo_runs_as_written
fi
exec cargo test --locked "$@"
