#!/usr/bin/env bash
# The Debian packages that the ELF files under the given folders link at run time, one a
# line: every library `ldd` resolves for them, mapped to the package that owns it. Libraries
# that no package owns (those inside the folders themselves, such as MKL or a wheel's bundled
# libraries) are left out: the runtime stage copies the folders.
#
#   docker/runtime-packages.sh DIR...
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: docker/runtime-packages.sh DIR..." >&2; exit 2; }
owner() {
  # dpkg knows each file by the path its package ships; with merged /usr a library that
  # ldd finds under /lib may be shipped as /usr/lib, or the other way round.
  local f=$1 alt
  case "$f" in /usr/*) alt=${f#/usr} ;; *) alt=/usr$f ;; esac
  local hit
  hit=$(dpkg -S "$f" 2>/dev/null || dpkg -S "$alt" 2>/dev/null || true)
  echo "${hit%%:*}"
}
find "$@" -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) -print0 |
  while IFS= read -r -d '' f; do
    [ "$(head -c 4 "$f" | tr -d '\0')" = $'\177ELF' ] || continue
    ldd "$f" < /dev/null 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
  done | sort -u | while read -r lib; do
    owner "$lib" < /dev/null
  done | grep -v '^$' | sort -u
