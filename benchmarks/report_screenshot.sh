#!/usr/bin/env bash
# A PNG screenshot of a `textsvae report` page, rendered by headless Chromium offline.
#
#   benchmarks/report_screenshot.sh REPORT.html OUT.png [HEIGHT]
#
# The window is 1366 px wide (a laptop screen) and HEIGHT px tall (default 900; the screenshot
# shows the top HEIGHT px of the page). Chromium is $CHROMIUM, else `chromium` on PATH (Debian:
# apt-get install chromium). The browser gets a throw-away profile and no network features.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 REPORT.html OUT.png [HEIGHT]" >&2
    exit 2
fi
html=$(realpath "$1")
out=$(realpath -m "$2")
height=${3:-900}
browser=${CHROMIUM:-$(command -v chromium || true)}
[[ -f "$html" ]] || { echo "error: no such file: $1" >&2; exit 2; }
[[ -n "$browser" ]] || { echo "error: chromium not found (apt-get install chromium, or set CHROMIUM)" >&2; exit 2; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --window-size="1366,$height" --screenshot="$out" "file://$html" >/dev/null 2>&1
[[ -s "$out" ]] || { echo "error: chromium wrote no screenshot to $out" >&2; exit 1; }
echo "wrote $out"
