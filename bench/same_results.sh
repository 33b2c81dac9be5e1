#!/bin/sh
# Runs 20 fixed-seed training steps of each micro config with two d2v
# binaries (e.g. before and after an optimisation) and prints, per modality,
# the largest relative difference between their per-step losses. Issue 6's
# "same results as before the optimisations"; float tolerance is ~1e-6.
# usage: bench/same_results.sh OLD_D2V NEW_D2V DATA_ROOT
#   DATA_ROOT holds fmnist/train, words/train, text/corpus.txt and
#   text/tokenizer-4096 (scripts/demo.sh builds them under data/).
set -eu
old=$1 new=$2 data=$3
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
run() { # binary tag
  "$1" pretrain "$here/configs/image_micro.ini" --data "$data/fmnist/train" --run "$work/image_$2" \
    --set train.threads=2 --set train.steps=20 --set train.batch_size=16 --set train.log_every=1 >/dev/null
  "$1" pretrain "$here/configs/speech_micro.ini" --data "$data/words/train" --run "$work/speech_$2" \
    --set train.threads=2 --set train.steps=20 --set train.batch_size=4 --set train.log_every=1 >/dev/null
  "$1" pretrain "$here/configs/text_micro.ini" --data "$data/text/corpus.txt" --run "$work/text_$2" \
    --set train.threads=2 --set train.steps=20 --set train.log_every=1 \
    --set data.tokenizer="$data/text/tokenizer-4096" >/dev/null
}
run "$old" old
run "$new" new
for m in image speech text; do
  /usr/bin/python3 - "$work/${m}_old/log.jsonl" "$work/${m}_new/log.jsonl" "$m" <<'PY'
import json, sys
def losses(path):
    return [json.loads(line)["loss"] for line in open(path) if '"loss"' in line]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == len(b) == 20, (len(a), len(b))
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"{sys.argv[3]:7s} 20 steps: loss at step 20 {a[-1]:.7f} vs {b[-1]:.7f}, largest relative difference {worst:.2e}")
PY
done
