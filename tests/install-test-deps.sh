#!/usr/bin/env bash
# System packages that only the tests need: Debian's Chromium and ChromeDriver for the
# annotation web app's browser test; Xvfb, Mesa and the libraries of the PyQt5 wheel for the
# napari plugin's headless test (Qt's offscreen platform takes its OpenGL context from the
# Xvfb display that pytest-xvfb starts). Installs them when root and missing; otherwise says
# what to install, and those tests skip with that reason.
set -euo pipefail
need=()
qt=(xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3
    libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
    libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0)
for p in chromium chromium-driver "${qt[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-test-deps.sh: not root or no apt; the browser and napari tests will skip (install: ${need[*]})." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
