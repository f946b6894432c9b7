#!/usr/bin/env bash
# Builds treffpunkt-testenv (etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler in one process) into a cache outside the repository:
#
#   ${TREFFPUNKT_CACHE:-$HOME/.cache/treffpunkt}/testenv/<hash>/treffpunkt-testenv
#
# <hash> covers go.mod, go.sum, *.go, this script and the Go version, so any
# change rebuilds; an existing binary is reused. The build runs under
# `flock /tmp/treffpunkt-build.lock` so it never overlaps another build.
# Progress goes to stderr; the last line on stdout is the binary's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

lock=/tmp/treffpunkt-build.lock
cache="${TREFFPUNKT_CACHE:-$HOME/.cache/treffpunkt}/testenv"
goversion="$(go env GOVERSION)"
hash="$(
  {
    echo "$goversion"
    sha256sum go.mod go.sum build.sh
    find . -maxdepth 1 -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
)"
out="$cache/$hash/treffpunkt-testenv"

if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi

k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' go.mod)"
major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit="
done

mkdir -p "$cache/$hash"
tmp="$(mktemp "$cache/$hash/.treffpunkt-testenv.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

echo "building treffpunkt-testenv ($k8s_version, $goversion) -> $out" >&2
start=$SECONDS
# Re-check inside the lock: a concurrent build.sh may have finished meanwhile.
flock "$lock" bash -c '
  set -euo pipefail
  [[ -x "$1" ]] && exit 0
  CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="$3" -o "$2" .
  mv -f "$2" "$1"
' _ "$out" "$tmp" "$ldflags"
echo "built in $((SECONDS - start))s ($(du -h "$out" | cut -f1))" >&2
echo "$out"
