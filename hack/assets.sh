#!/usr/bin/env bash
# Prints a folder holding kube-apiserver and etcd (the envtest layout), found the way a
# person would: $KUBEBUILDER_ASSETS when set; else `setup-envtest use -p path` when that
# tool is installed; else this workspace's ../shared/envtest/setup.sh. One line on stderr
# naming what is missing when none works.
set -euo pipefail
cd "$(dirname "$0")/.."
ok() { [ -n "$1" ] && [ -x "$1/kube-apiserver" ] && [ -e "$1/etcd" ]; }
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  ok "$KUBEBUILDER_ASSETS" || { echo "assets: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS holds no kube-apiserver and etcd" >&2; exit 1; }
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi
if command -v setup-envtest >/dev/null; then
  dir=$(setup-envtest use -p path 2>/dev/null || true)
  if ok "$dir"; then echo "$dir"; exit 0; fi
fi
if [ -x ../shared/envtest/setup.sh ] || [ -f ../shared/envtest/setup.sh ]; then
  dir=$(bash ../shared/envtest/setup.sh)
  if ok "$dir"; then echo "$dir"; exit 0; fi
fi
echo "assets: no kube-apiserver + etcd found: set KUBEBUILDER_ASSETS, or install setup-envtest (go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest)" >&2
exit 1
