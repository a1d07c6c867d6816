#!/usr/bin/env bash
# Build the GPU image with whichever container engine works here (the Makefile's docker
# targets call this; see docs/gpu.md).
#
#   docker/image.sh base     provide the Dockerfile's base image and record its pin
#   docker/image.sh image    build the lean runtime image, deadnet-caffe:gpu
#   docker/image.sh check    build through the self-test stage, deadnet-caffe:selftest
#
# Engine: docker when its daemon answers, else podman (builds with BUILDAH_ISOLATION, default
# chroot, which also works where containers themselves cannot run); ENGINE=docker|podman
# overrides. Base: debian:bookworm, pulled and pinned by its digest where a registry is
# reachable; otherwise bootstrapped with `debootstrap --variant=minbase bookworm` from this
# machine's own apt configuration, imported, and pinned by the archive's Release date (the
# snapshot date). The chosen reference is kept in .docker-base (git-ignored) and passed to
# the build as BASE, and the image carries it in the label org.opencontainers.image.base.name.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
die() { echo "docker/image.sh: $*" >&2; exit 2; }
log() { echo "[image] $*"; }

pick_engine() {
  if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"; return; fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
  if command -v podman >/dev/null; then echo podman; return; fi
  die "neither a running docker daemon nor podman was found; install one (Debian: apt-get install podman)."
}
engine=$(pick_engine)
ref_file=.docker-base

# The Debian archive URI this machine's apt already uses for SUITE (deb822 or one-line form).
apt_uri() {
  local suite=$1 uri="" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v s="$suite" '/^URIs:/ {u=$2} /^Suites:/ {for (i=2; i<=NF; i++) if ($i == s) {print u; exit}}' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk -v s="$suite" '$1 == "deb" && $3 == s {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "$uri"
}

bootstrap_base() {
  command -v debootstrap >/dev/null ||
    die "no registry answered and debootstrap is missing: run 'apt-get install debootstrap' and retry."
  [ "$(id -u)" = 0 ] || die "debootstrap needs root: run 'sudo make docker-base'."
  local mirror security root date tag
  mirror=$(apt_uri bookworm)
  [ -n "$mirror" ] || die "found no Debian bookworm archive in /etc/apt to bootstrap from."
  security=$(apt_uri bookworm-security)
  root=$(mktemp -d "${TMPDIR:-/tmp}/deadnet-base.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=minbase bookworm from the machine's apt mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" > "$root.log" 2>&1 ||
    die "debootstrap failed; see $root.log."
  rm -f "$root.log"
  # The snapshot date: the Date field of the bookworm Release file it installed from.
  date=$(awk '/^Date:/ {$1=""; print; exit}' "$root"/var/lib/apt/lists/*_dists_bookworm_*Release)
  date=$(date -u -d "$date" +%Y%m%d)
  {
    echo "deb $mirror bookworm main"
    echo "deb $mirror bookworm-updates main"
    [ -z "$security" ] || echo "deb $security bookworm-security main"
  } > "$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
  tag=deadnet-base:bookworm-$date
  log "importing it as $tag (Debian archive snapshot of $date)"
  tar -C "$root" --numeric-owner -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$tag" >/dev/null
  rm -rf "$root"
  trap - EXIT
  # podman names a local image localhost/NAME; docker keeps NAME.
  [ "$engine" = podman ] && tag=localhost/$tag
  echo "$tag" > "$ref_file"
}

cmd_base() {
  if timeout 120 "$engine" pull debian:bookworm >/dev/null 2>&1; then
    local digest
    digest=$("$engine" image inspect --format '{{index .RepoDigests 0}}' debian:bookworm)
    [ -n "$digest" ] || die "$engine pulled debian:bookworm but reports no digest for it."
    echo "$digest" > "$ref_file"
  else
    log "no registry answered for debian:bookworm; bootstrapping the base instead"
    bootstrap_base
  fi
  log "base image: $(cat "$ref_file") (recorded in $ref_file)"
}

# The newest base that bootstrap_base made on this machine, if any: a fresh clone has no
# .docker-base, and bootstrapping again would give a new base and so rebuild every layer.
local_base() {
  "$engine" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null |
    grep -E '(^|/)deadnet-base:bookworm-[0-9]{8}$' | sort | tail -n 1 || true
}

build() {
  local target=$1 tag=$2 found
  if [ ! -f "$ref_file" ]; then
    found=$(local_base)
    if [ -n "$found" ]; then
      log "reusing the base $found made here earlier ('docker/image.sh base' makes a new one)"
      echo "$found" > "$ref_file"
    else
      cmd_base
    fi
  fi
  local base
  base=$(cat "$ref_file")
  "$engine" image inspect "$base" >/dev/null 2>&1 || cmd_base
  base=$(cat "$ref_file")
  # The build stage trusts the CA certificates added on this machine (see the Dockerfile).
  rm -rf docker/ca-certificates
  mkdir -p docker/ca-certificates
  find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} docker/ca-certificates/ \; \
    2>/dev/null || true
  local args=(build --target "$target" --build-arg "BASE=$base" -t "$tag")
  [ "$engine" = podman ] && args+=(--isolation "${BUILDAH_ISOLATION:-chroot}")
  log "$engine ${args[*]} ."
  local t0=$SECONDS
  "$engine" "${args[@]}" . || die "$engine build of $tag failed (exit status $?)."
  # podman build has been seen to exit 0 when it is killed; trust only an image that exists.
  local size
  size=$("$engine" image inspect --format '{{.Size}}' "$tag" 2>/dev/null) ||
    die "$engine build ended but left no image $tag."
  log "built $tag in $((SECONDS - t0)) s; size $((size / 1000000)) MB"
}

case "${1:-}" in
  base) cmd_base ;;
  image) build runtime deadnet-caffe:gpu ;;
  check) build selftest deadnet-caffe:selftest ;;
  *) die "usage: docker/image.sh base|image|check" ;;
esac
