#!/usr/bin/env bash
# Builds Treffpunkt's two container images without a container engine, as OCI image layouts:
#
#   deploy/images/assemble.sh [OUT]
#     -> OUT/operator/ and OUT/media-node/   (default OUT: ${TREFFPUNKT_CACHE:-$HOME/.cache/treffpunkt}/images)
#
# The images hold the same files as those of deploy/images/Dockerfile: the statically linked
# binary, /etc/passwd and /etc/group with the unprivileged user 65532, nothing else. The
# binaries are built like the Dockerfile builds them (release, glibc with crt-static, debug
# info stripped; build output in ${TREFFPUNKT_CACHE}/target-image); crane (deploy/tools/build.sh crane) turns them
# into images through a registry that it serves on loopback for the length of the build, and
# writes them out as OCI layouts. To publish one:
#
#   crane push OUT/operator REGISTRY/treffpunkt/operator:0.1.0
#
# Safe to run again: cargo and crane rebuild only what changed. The cargo build runs under
# `flock /tmp/treffpunkt-build.lock`. Progress goes to stderr; the last line on stdout is OUT.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${TREFFPUNKT_CACHE:-$HOME/.cache/treffpunkt}"
out="${1:-$cache/images}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
lock=/tmp/treffpunkt-build.lock

crane="$("$root/deploy/tools/build.sh" crane | tail -n 1)"
version="$(awk -F'"' '/^version *=/ { print $2; exit }' "$root/Cargo.toml")"
arch="$(uname -m)"
case "$arch" in
  x86_64) platform=linux/amd64 ;;
  aarch64) platform=linux/arm64 ;;
  *) echo "assemble.sh: no image platform for $arch" >&2; exit 1 ;;
esac
target="$arch-unknown-linux-gnu"
target_dir="$cache/target-image"

echo "building the static binaries ($target, release) in $target_dir" >&2
start=$SECONDS
# The target is named so that crt-static links the binaries statically, but not the build
# scripts and proc-macros that run during the build.
(
  cd "$root"
  flock "$lock" env CARGO_TARGET_DIR="$target_dir" RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" \
      --bin treffpunkt --bin treffpunkt-media-node >&2
)
echo "binaries ready after $((SECONDS - start))s" >&2
bin="$target_dir/$target/release"

work="$(mktemp -d)"
registry_pid=""
cleanup() {
  if [[ -n "$registry_pid" ]]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A registry on loopback, in memory, for the length of this script.
"$crane" registry serve --address 127.0.0.1:0 >"$work/registry.log" 2>&1 &
registry_pid=$!
port=""
for _ in $(seq 100); do
  port="$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$work/registry.log")"
  [[ -n "$port" ]] && break
  sleep 0.1
done
if [[ -z "$port" ]]; then
  echo "assemble.sh: crane's registry did not start:" >&2
  cat "$work/registry.log" >&2
  exit 1
fi
registry="127.0.0.1:$port"

# crane logs every blob it pushes; that goes to a file, shown only when a step fails.
crane_quietly() {
  "$crane" "$@" 2>>"$work/crane.log" || { cat "$work/crane.log" >&2; return 1; }
}

# assemble NAME BINARY ENTRYPOINT CMD PORTS DESCRIPTION
assemble() {
  local name="$1" binary="$2" entrypoint="$3" cmd="$4" ports="$5" description="$6"
  local rootfs="$work/$name/rootfs" layer="$work/$name/layer.tar"
  mkdir -p "$rootfs/usr/local/bin"
  cp -R "$root/deploy/images/rootfs/." "$rootfs/"
  install -m 0755 "$bin/$binary" "$rootfs/usr/local/bin/$binary"
  # Symbols stay (for backtraces), the line tables of the release profile go: a quarter of
  # the size.
  strip --strip-debug "$rootfs/usr/local/bin/$binary"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
  # The same bytes for the same files: sorted, owned by root, no timestamps.
  tar --create --file "$layer" --directory "$rootfs" --sort=name --format=posix \
    --owner=0 --group=0 --numeric-owner --mtime=@0 \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    etc usr
  local repo="$registry/treffpunkt/$name"
  crane_quietly append --oci-empty-base --new_layer "$layer" --new_tag "$repo:layer" >/dev/null
  local args=(--user 65532:65532 --set-platform "$platform" --entrypoint "$entrypoint"
    --label "org.opencontainers.image.title=treffpunkt-$name"
    --label "org.opencontainers.image.description=$description"
    --label "org.opencontainers.image.licenses=AGPL-3.0-or-later"
    --label "org.opencontainers.image.version=$version"
    --exposed-ports "$ports" --tag "$repo:$version")
  if [[ -n "$cmd" ]]; then args+=(--cmd "$cmd"); fi
  crane_quietly mutate "$repo:layer" "${args[@]}" >/dev/null
  crane_quietly validate --remote "$repo:$version" >/dev/null
  rm -rf "${out:?}/$name"
  crane_quietly pull --format oci "$repo:$version" "$out/$name"
  echo "$name: $out/$name ($(du -sh "$out/$name" | cut -f1), $(crane_quietly digest "$repo:$version"))" >&2
}

assemble operator treffpunkt /usr/local/bin/treffpunkt operator "8080/tcp,7001/tcp,9090/tcp" \
  "Treffpunkt's control plane: gateway, Attach endpoint and operator"
assemble media-node treffpunkt-media-node /usr/local/bin/treffpunkt-media-node "" \
  "10000/udp,10443/tcp,9091/tcp" "Treffpunkt's media node, a selective forwarding unit"

echo "$out"
