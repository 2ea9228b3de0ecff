#!/usr/bin/env bash
# Build data/photos/{train,valid}: real photographs from Debian wallpaper packages, halved, as PNG.
# Usage: scripts/get_photos.sh [OUT_DIR]   (needs apt-get and dpkg-deb; run `apt-get update` first if needed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/data/photos}"
python="${PYTHON:-$root/.venv/bin/python}"
work="$root/data/debs"
mkdir -p "$work/extract"
cd "$work"
apt-get download plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 \
    lomiri-wallpapers-20.04 palapeli-data
for deb in ./*.deb; do dpkg-deb -x "$deb" extract; done
"$python" "$root/scripts/build_photos.py" "$work/extract" "$out"
