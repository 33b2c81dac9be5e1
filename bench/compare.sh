#!/bin/sh
# Runs `d2v bench` and the PyTorch peer (bench/peer.py) alternately, config
# by config, in one invocation, and prints one table row per config.
# usage: bench/compare.sh [--d2v PATH] [--threads T] [--steps N] [--warmup W] CONFIG...
# Both see the same thread count, steps and warm-up; the ratio is PyTorch's
# median step time over d2v's (above 1: d2v is faster). The peer runs with
# glibc malloc tuned for torch (D2V_PEER_MALLOC, empty to turn it off).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
d2v=$here/../build/d2v threads=2 steps=5 warmup=1
while [ $# -gt 0 ]; do
  case $1 in
    --d2v) d2v=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "compare.sh: give at least one CONFIG" >&2; exit 2; }
[ -x "$d2v" ] || { echo "compare.sh: $d2v is not built (ninja -C build)" >&2; exit 2; }
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
# PyTorch's best case (as issue 6 measured it): glibc keeps freed memory
# instead of unmapping it, so torch does not re-fault its activation buffers
# every step (no mmap'd chunks, no heap trimming). d2v allocates once anyway.
peer_malloc=${D2V_PEER_MALLOC-glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736}
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
rows=""
for config in "$@"; do
  name=$(basename "$config" .ini)
  peer=$(GLIBC_TUNABLES=$peer_malloc /usr/bin/python3 "$here/peer.py" "$config" --threads "$threads" --steps "$steps" --warmup "$warmup" | tail -n 1)
  ours=$("$d2v" bench "$config" --threads "$threads" --steps "$steps" --warmup "$warmup" | tail -n 1)
  echo "pytorch $name: $peer" >&2
  echo "d2v     $name: $ours" >&2
  p_ms=$(field "$peer" step_ms) d_ms=$(field "$ours" step_ms)
  rows="$rows$(printf '%s|%s|%s|%s|%s|%s|%s|%s' "$name" "$p_ms" "$d_ms" \
    "$(echo "$p_ms $d_ms" | awk '{printf "%.2f", $1 / $2}')" "$(field "$peer" mfu)" "$(field "$ours" mfu)" \
    "$(field "$peer" rss_mb)" "$(field "$ours" rss_mb)")
"
done
echo "threads=$threads steps=$steps warmup=$warmup"
printf '| config | PyTorch step ms | d2v step ms | ratio (PyTorch/d2v) | MFU PyTorch | MFU d2v | RSS MB PyTorch | RSS MB d2v |\n'
printf '|---|---|---|---|---|---|---|---|\n'
printf '%s' "$rows" | awk -F'|' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8}'
