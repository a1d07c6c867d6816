#!/usr/bin/env bash
# The Debian packages that the ELF files under the given folders link at run time, one a
# line: every library `ldd` resolves for them, mapped to the package that owns it. Libraries
# inside the folders themselves (MKL, a wheel's bundled libraries) are left out: the runtime
# stage copies the folders. A library that is neither inside them nor owned by a package
# (a self-built Python's libpython, say) would be missing at run time: exit status 2.
#
#   docker/runtime-packages.sh DIR...
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: docker/runtime-packages.sh DIR..." >&2; exit 2; }
dirs=()
for d in "$@"; do dirs+=("$(readlink -f "$d")"); done
merged() {
  # dpkg knows each file by the path its package ships; with merged /usr a library that
  # ldd finds under /lib may be shipped as /usr/lib, or the other way round.
  case "$1" in /usr/*) echo "${1#/usr}" ;; *) echo "/usr$1" ;; esac
}
owner() {
  # A library reached through update-alternatives (libblas.so.3, liblapack.so.3 and
  # libopenblas.so.0 -> /etc/alternatives -> openblas-pthread/) is owned by no package
  # under the name ldd prints: the file it resolves to is. Installing that package in the
  # runtime stage registers the same alternative again.
  local f=$1 real hit
  real=$(readlink -f "$f")
  hit=$(dpkg -S "$f" 2>/dev/null || dpkg -S "$(merged "$f")" 2>/dev/null ||
    dpkg -S "$real" 2>/dev/null || dpkg -S "$(merged "$real")" 2>/dev/null || true)
  echo "${hit%%:*}"
}
inside() {
  local real d
  real=$(readlink -f "$1")
  for d in "${dirs[@]}"; do
    case "$real" in "$d"/*) return 0 ;; esac
  done
  return 1
}
libs=$(find "${dirs[@]}" -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) -print0 |
  while IFS= read -r -d '' f; do
    [ "$(head -c 4 "$f" | tr -d '\0')" = $'\177ELF' ] || continue
    ldd "$f" < /dev/null 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
  done | sort -u)
pkgs=()
orphans=()
for lib in $libs; do
  inside "$lib" && continue
  pkg=$(owner "$lib")
  if [ -n "$pkg" ]; then pkgs+=("$pkg"); else orphans+=("$lib"); fi
done
[ ${#pkgs[@]} -eq 0 ] || printf '%s\n' "${pkgs[@]}" | sort -u
if [ ${#orphans[@]} -gt 0 ]; then
  echo "runtime-packages.sh: no Debian package owns ${orphans[*]}, and it lies outside $*;" \
    "the runtime stage would lack it." >&2
  exit 2
fi
