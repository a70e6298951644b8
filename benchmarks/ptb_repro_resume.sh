#!/usr/bin/env bash
# Start or resume the ptb-repro grid (issue 19) in the background, from a pinned commit.
#   bash benchmarks/ptb_repro_resume.sh [COMMIT]
# The code runs from a git worktree of COMMIT in .repro/code (git-ignored), installed into its own
# venv, so edits on main never change the code under the grid. Checkpoints and run folders live in
# $PTB_REPRO_HOME (default /root/ptb-repro) so they outlive a re-laid checkout; PTB is installed
# there from ../shared/data/ptb. The grid runs `--jobs $PTB_REPRO_JOBS --threads 1` (default 2 jobs)
# under nice 19 and logs to
# $PTB_REPRO_HOME/bench.log; stop it with SIGINT to its process group (it saves a mid-epoch last.pt).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
commit="${1:-$(cat "$repo/results/ptb-repro.commit" 2>/dev/null || git -C "$repo" rev-parse HEAD)}"
home="${PTB_REPRO_HOME:-/root/ptb-repro}"
code="$repo/.repro/code"
mkdir -p "$home/results" "$home/data"
if [ ! -d "$code" ]; then
  git -C "$repo" worktree prune
  git -C "$repo" worktree add --detach "$code" "$commit"
fi
[ "$(git -C "$code" rev-parse HEAD)" = "$(git -C "$repo" rev-parse "$commit")" ] || {
  echo "ptb_repro_resume: $code is not at $commit" >&2; exit 2; }
if [ ! -x "$home/venv/bin/textsvae" ]; then
  python3 -m venv "$home/venv"
  "$home/venv/bin/pip" install -q torch==2.13.0
  "$home/venv/bin/pip" install -q "$code"
fi
export TEXTSVAE_DATA="$home/data"
[ -f "$home/data/ptb/test.txt" ] || "$home/venv/bin/textsvae" data fetch ptb --from "$repo/../shared/data/ptb"
cd "$code"
echo "$(date -u +%FT%TZ) resume at $(git rev-parse --short HEAD)" >> "$home/bench.log"
TEXTSVAE_PROGRESS=lines setsid nohup nice -n 19 "$home/venv/bin/textsvae" bench ptb-repro \
  --results "$home/results" --jobs "${PTB_REPRO_JOBS:-2}" --threads 1 >> "$home/bench.log" 2>&1 < /dev/null &
echo "started pid $! (process group $!); log $home/bench.log"
