#!/usr/bin/env bash
# Copy the ptb-repro grid's run folders, without checkpoints, into results/ptb-repro/ and redraw its
# table (results/ptb-repro-table.md, published rows beside ours), the gap of each of our rows to the
# published row it reproduces (results/ptb-repro-gaps.md) and its training curves
# (results/ptb-repro-curves.png: validation loss, KL, MI, AU and LR per epoch). Safe while the grid runs.
#   bash benchmarks/ptb_repro_snapshot.sh [--copy-only]       (needs `textsvae` on PATH)
# A run folder already in results/ptb-repro/ is never replaced by a copy that has trained fewer steps
# (a restart of a committed run) or that has not finished where the committed one has: it is kept and
# named. --copy-only copies and stops (no table, curves or status). PTB_REPRO_RESULTS sets the results
# folder (default: the repository's results/).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
home="${PTB_REPRO_HOME:-/root/ptb-repro}"
results="${PTB_REPRO_RESULTS:-$repo/results}"
dest="$results/ptb-repro"
copy_only=""
[ "${1:-}" = "--copy-only" ] && copy_only=1

# "<status> <step>" of a run folder's state.json ("none -1" without one)
progress() {
  python3 - "$1/state.json" <<'PY'
import json, sys
try:
    state = json.load(open(sys.argv[1]))
    print(state.get("status", "none"), int(state.get("step", -1)))
except (OSError, ValueError):
    print("none", -1)
PY
}

mkdir -p "$dest"
runs=()
for run in "$home"/results/*/; do
  id="$(basename "$run")"
  [ -f "$run/config.json" ] || continue
  if [ -d "$dest/$id" ]; then
    read -r new_status new_step <<< "$(progress "$run")"
    read -r old_status old_step <<< "$(progress "$dest/$id")"
    if [ "$new_step" -lt "$old_step" ] || { [ "$old_status" = finished ] && [ "$new_status" != finished ]; }; then
      echo "ptb_repro_snapshot: kept $id as it is in $dest ($old_status at step $old_step);" \
           "the grid's copy is $new_status at step $new_step" >&2
      [ -s "$dest/$id/log.jsonl" ] && runs+=("$dest/$id")
      continue
    fi
  fi
  mkdir -p "$dest/$id"
  find "$run" -maxdepth 1 -type f ! -name '*.pt' ! -name '.lock' ! -name '*.tmp' -exec cp -p {} "$dest/$id/" \;
  [ -s "$run/log.jsonl" ] && runs+=("$dest/$id")
done
[ -n "$copy_only" ] && exit 0
cd "$repo"
textsvae table ptb-repro --results "$dest" -o "$results/ptb-repro-table.md"
textsvae table ptb-repro --results "$dest" --gaps -o "$results/ptb-repro-gaps.md"
[ ${#runs[@]} -gt 0 ] && textsvae plot "${runs[@]}" --panels protocol -o "$results/ptb-repro-curves.png"
textsvae bench ptb-repro --results "$home/results" --status
