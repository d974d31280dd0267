#!/usr/bin/env bash
# Builds the operator's image as an OCI archive, with no container engine and no registry:
#
#   hack/image.sh [OUT.tar]        (default target/leen-operator-image.tar)
#
# The image holds the stripped release binary and a distroless-like runtime taken from
# this machine's Debian packages, nothing else: the glibc and libgcc files the binary links
# (found with ldd; libc6, libgcc-s1), the CA bundle (ca-certificates: Leen is reached over
# https), /etc/passwd and /etc/group with the non-root user 65532, and each package's
# copyright file. The same layout as the Dockerfile's image (distroless/cc, /leen-operator,
# user 65532), for machines without an engine. Files are written with times 0 and owner
# root (hack/oci_archive.py), so the same binary and packages give the same digest.
#
# Prints what it holds, its size and digest; the last line is the image reference
# (LEEN_IMAGE, default ghcr.io/leen-operator/leen-operator:<version>), as
# `ctr images import` names it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/leen-operator-image.tar}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ref=${LEEN_IMAGE:-ghcr.io/leen-operator/leen-operator:$version}

if [ ! -f /etc/ssl/certs/ca-certificates.crt ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q ca-certificates >&2
fi
cargo build --release --locked --bin leen-operator >&2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 target/release/leen-operator "$root/leen-operator"
strip "$root/leen-operator"

packages=()
add_file() { # a file of a Debian package (or made by it: $2), at the path it is looked for
  local path=$1 pkg=${2:-} real
  real=$(readlink -f "$path")
  [ -n "$pkg" ] || pkg=$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1) \
    || pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1) || true
  [ -n "$pkg" ] || { echo "image.sh: $path belongs to no Debian package" >&2; exit 1; }
  install -D -m 0644 "$real" "$root$path"
  packages+=("$pkg")
}
for lib in $(ldd target/release/leen-operator | awk '/=>/ {print $3} !/=>/ && $1 ~ /^\// {print $1}'); do
  add_file "$lib"
done
chmod 0755 "$root"/lib*/ld-linux* "$root"/lib/*/ld-linux* 2>/dev/null || true
# Made by update-ca-certificates from the ca-certificates package (which owns no copy).
dpkg-query -W ca-certificates >/dev/null
add_file /etc/ssl/certs/ca-certificates.crt ca-certificates
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
for pkg in "${packages[@]}"; do
  [ -f "/usr/share/doc/$pkg/copyright" ] && install -D -m 0644 "/usr/share/doc/$pkg/copyright" "$root/usr/share/doc/$pkg/copyright"
done
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"

versions=$(for pkg in "${packages[@]}"; do dpkg-query -W -f='${Package}=${Version} ' "$pkg"; done)
mkdir -p "$(dirname "$out")"
digest=$(python3 hack/oci_archive.py "$out" "$ref" "$root:/" \
  --entrypoint /leen-operator --cmd run --user 65532:65532 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.source=https://github.com/leen-operator/leen-operator" \
  --label "dev.leen.debian-packages=${versions% }")
echo "image: $out" >&2
(cd "$root" && find . -type f -o -type l | sed 's|^\.||' | sort | sed 's/^/  /') >&2
echo "packages: ${versions% }" >&2
echo "size: $(du -h "$out" | cut -f1) ($(stat -c %s "$out") bytes), manifest digest $digest" >&2
echo "$ref"
