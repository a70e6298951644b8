#!/usr/bin/env bash
# Copy the ptb-repro grid's run folders, without checkpoints, into results/ptb-repro/ and redraw its
# table (results/ptb-repro-table.md, published rows beside ours), the gap of each of our rows to the
# published row it reproduces (results/ptb-repro-gaps.md) and its training curves
# (results/ptb-repro-curves.png: validation loss, KL, MI, AU and LR per epoch). Safe while the grid runs.
#   bash benchmarks/ptb_repro_snapshot.sh        (needs `textsvae` on PATH)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
home="${PTB_REPRO_HOME:-/root/ptb-repro}"
dest="$repo/results/ptb-repro"
mkdir -p "$dest"
runs=()
for run in "$home"/results/*/; do
  id="$(basename "$run")"
  [ -f "$run/config.json" ] || continue
  mkdir -p "$dest/$id"
  find "$run" -maxdepth 1 -type f ! -name '*.pt' ! -name '.lock' ! -name '*.tmp' -exec cp -p {} "$dest/$id/" \;
  [ -s "$run/log.jsonl" ] && runs+=("$dest/$id")
done
cd "$repo"
textsvae table ptb-repro --results results/ptb-repro -o results/ptb-repro-table.md
textsvae table ptb-repro --results results/ptb-repro --gaps -o results/ptb-repro-gaps.md
[ ${#runs[@]} -gt 0 ] && textsvae plot "${runs[@]}" --panels protocol -o results/ptb-repro-curves.png
textsvae bench ptb-repro --results "$home/results" --status
