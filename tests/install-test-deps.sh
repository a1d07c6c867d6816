#!/usr/bin/env bash
# System packages that only the tests need: Debian's Chromium and ChromeDriver for the
# annotation web app's browser test. Installs them when root and missing; otherwise says
# what to install, and the browser test skips with that reason.
set -euo pipefail
need=()
for p in chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-test-deps.sh: not root or no apt; the browser test will skip (install: ${need[*]})." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
