#!/usr/bin/env bash
# Add the apt entries the Caffe build needs, derived from the machine's own apt configuration
# (the first Debian archive URI it already uses), so no mirror is written into this project.
#
#   apt-sources.sh deb-src    bullseye deb-src entry: the caffe source package lives there
#   apt-sources.sh non-free   bookworm non-free: nvidia-cuda-toolkit for the GPU build
set -euo pipefail
die() { echo "apt-sources.sh: $*" >&2; exit 2; }

uri=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  # deb822 stanza whose Suites name a Debian release and whose URI is the main archive.
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && /bookworm( |$)/ {print u; exit}' "$f")
  [ -n "$uri" ] && break
done
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
  uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$uri" ] || die "found no Debian bookworm archive in /etc/apt; add a deb-src entry for bullseye by hand."

case "${1:-}" in
  deb-src)
    cat > /etc/apt/sources.list.d/deadnet-bullseye-src.sources <<EOF
Types: deb-src
URIs: $uri
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    ;;
  non-free)
    cat > /etc/apt/sources.list.d/deadnet-bookworm-nonfree.sources <<EOF
Types: deb
URIs: $uri
Suites: bookworm
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    ;;
  *) die "usage: apt-sources.sh deb-src|non-free" ;;
esac
