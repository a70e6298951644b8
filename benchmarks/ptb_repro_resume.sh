#!/usr/bin/env bash
# Start or resume the ptb-repro grid (issue 19) in the background, from a pinned commit.
#   bash benchmarks/ptb_repro_resume.sh [--data PTB_FOLDER] [COMMIT]
# PTB comes from PTB_FOLDER (train.txt, valid.txt, test.txt: Mikolov's preprocessed PTB) when given,
# else from `textsvae data fetch ptb` (a download); once installed in $PTB_REPRO_HOME/data it is reused.
# The code runs from a git worktree of COMMIT in .repro/code (git-ignored), installed into its own
# venv, so edits on main never change the code under the grid. Checkpoints and run folders live in
# $PTB_REPRO_HOME (default /root/ptb-repro) so they outlive a re-laid checkout. The grid runs `--jobs $PTB_REPRO_JOBS` (default 2: two
# single-thread runs side by side, 1.45x the tokens/s of one bf16 run with both cores on the 2-core AMD EPYC of
# 2026-12-08, results/perf.md; each run then takes 1.38x as long, and a machine lost between sessions loses
# two runs' progress; PTB_REPRO_JOBS=1 runs one at a time), `--threads $PTB_REPRO_THREADS` if set
# (default cores // jobs), under nice 19, and logs to
# $PTB_REPRO_HOME/bench.log; stop it with SIGINT to its process group (it saves a mid-epoch last.pt).
# To move the grid to a new commit: stop it, write the commit into results/ptb-repro.commit, run this
# again (the worktree is moved and the package reinstalled; half-done runs resume under the new code).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
ptb_from=""
if [ "${1:-}" = "--data" ]; then
  [ -n "${2:-}" ] || { echo "ptb_repro_resume: --data needs a folder" >&2; exit 2; }
  ptb_from="$(cd "$2" 2>/dev/null && pwd)" || { echo "ptb_repro_resume: no folder $2" >&2; exit 2; }
  shift 2
fi
commit="${1:-$(cat "$repo/results/ptb-repro.commit" 2>/dev/null || git -C "$repo" rev-parse HEAD)}"
home="${PTB_REPRO_HOME:-/root/ptb-repro}"
code="$repo/.repro/code"
running="$(pgrep -f "textsvae bench ptb-repro" || true)"
if [ -n "$running" ]; then
  echo "ptb_repro_resume: the grid is already running (pid $(echo $running | tr '\n' ' ')); stop it first" >&2
  exit 2
fi
mkdir -p "$home/results" "$home/data"
if [ ! -d "$code" ]; then
  git -C "$repo" worktree prune
  git -C "$repo" worktree add --detach "$code" "$commit"
fi
moved=""
if [ "$(git -C "$code" rev-parse HEAD)" != "$(git -C "$repo" rev-parse "$commit")" ]; then
  echo "ptb_repro_resume: moving $code from $(git -C "$code" rev-parse --short HEAD) to $commit"
  git -C "$code" checkout -q --detach "$commit"
  moved=1
fi
if [ ! -x "$home/venv/bin/textsvae" ]; then
  python3 -m venv "$home/venv"
  "$home/venv/bin/pip" install -q torch==2.13.0
  "$home/venv/bin/pip" install -q "$code"
elif [ -n "$moved" ]; then
  "$home/venv/bin/pip" install -q --no-deps --force-reinstall "$code"
fi
export TEXTSVAE_DATA="$home/data"
export TEXTSVAE_GIT_COMMIT="$(git -C "$code" rev-parse --short=12 HEAD)"  # the venv holds a wheel: no checkout to ask
if [ ! -f "$home/data/ptb/test.txt" ]; then
  "$home/venv/bin/textsvae" data fetch ptb ${ptb_from:+--from "$ptb_from"} || {
    echo "ptb_repro_resume: PTB could not be installed; give a folder with PTB's train/valid/test.txt: --data DIR" >&2
    exit 2; }
fi
cd "$code"
echo "$(date -u +%FT%TZ) resume at $(git rev-parse --short HEAD)" >> "$home/bench.log"
TEXTSVAE_PROGRESS=lines setsid nohup nice -n 19 "$home/venv/bin/textsvae" bench ptb-repro \
  --results "$home/results" --jobs "${PTB_REPRO_JOBS:-2}" ${PTB_REPRO_THREADS:+--threads "$PTB_REPRO_THREADS"} >> "$home/bench.log" 2>&1 < /dev/null &
echo "started pid $! (process group $!); log $home/bench.log"
