#!/bin/sh
# End to end on real JPEGs: 20 pretraining steps on a handful of Fashion-MNIST
# images, the run directory's contents, a refused overwrite, embed, eval knn.
# usage: e2e_image.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -eu
d2v=$1 src=$2 work=$3
. "$src/tests/lib.sh"
need_fmnist
rm -rf "$work"
mkdir -p "$work"
fmnist_split "$work/data" 3 2

"$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/data/train" --run "$work/runs/first" \
  --set train.steps=20 --set train.batch_size=8 --set train.log_every=1 --set train.save_every=10 \
  --set train.threads=2 2> "$work/pretrain.err" || { cat "$work/pretrain.err"; fail "pretrain exited non-zero"; }
mv "$work/runs/first" "$work/run"  # the run directory was created with its parents

/usr/bin/python3 "$src/tests/check_run_log.py" "$work/run/log.jsonl" 20 || fail "log values"
[ -L "$work/run/last.safetensors" ] || fail "last.safetensors is missing"
[ -f "$work/run/checkpoint-00000010.safetensors" ] && [ -f "$work/run/checkpoint-00000020.safetensors" ] || fail "checkpoints"
"$d2v" inspect "$work/run/last.safetensors" | grep -q "teacher.blocks.5.fc2.weight" || fail "inspect lacks the teacher"

# Determinism and resume: the same config and seed give the same losses bit
# for bit, and a run resumed from its step-10 checkpoint continues the same
# curve as the uninterrupted run.
"$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/data/train" --run "$work/run_again" \
  --set train.steps=20 --set train.batch_size=8 --set train.log_every=1 --set train.save_every=10 \
  --set train.threads=2 2>/dev/null || fail "second run"
/usr/bin/python3 "$src/tests/check_run_log.py" --same-losses "$work/run/log.jsonl" "$work/run_again/log.jsonl" \
  || fail "same seed, different losses"
mkdir "$work/resumed"
cp "$work/run/checkpoint-00000010.safetensors" "$work/resumed/"
ln -s checkpoint-00000010.safetensors "$work/resumed/last.safetensors"
head -10 "$work/run/log.jsonl" > "$work/resumed/log.jsonl"
"$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/data/train" --run "$work/resumed" --resume \
  --set train.steps=20 --set train.batch_size=8 --set train.log_every=1 --set train.save_every=10 \
  --set train.threads=2 2>/dev/null || fail "resume"
/usr/bin/python3 "$src/tests/check_run_log.py" --same-losses "$work/run/log.jsonl" "$work/resumed/log.jsonl" \
  || fail "the resumed run left the curve"

# A second run into the same directory must not overwrite the first.
if "$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/data/train" --run "$work/run" 2> "$work/again.err"; then
  fail "pretrain overwrote an existing run"
fi
grep -q "already holds a run" "$work/again.err" || fail "unclear message: $(cat "$work/again.err")"

"$d2v" embed --checkpoint "$work/run/last.safetensors" --data "$work/data/test" --out "$work/test.npy" 2>/dev/null \
  || fail "embed"
/usr/bin/python3 -c "
import numpy, sys
f = numpy.load('$work/test.npy')
assert f.shape == (20, 128) and f.dtype == numpy.float32 and numpy.isfinite(f).all(), f.shape
" || fail "features"
[ "$(wc -l < "$work/test.npy.tsv")" -eq 21 ] || fail "test.npy.tsv should list 20 rows"
"$d2v" eval knn --checkpoint "$work/run/last.safetensors" --train "$work/data/train" --test "$work/data/test" \
  > "$work/knn.out" || fail "eval knn"
grep -q "^d2v eval knn top1=" "$work/knn.out" || fail "eval knn output"
# Bad input: a corrupt file is skipped with a warning naming it and counted
# in the log; with data.on_error=fail it stops the run with that message.
cp -r "$work/data/train" "$work/bad"
echo "not a jpeg" > "$work/bad/0_tshirt/corrupt.jpg"
head -c 300 "$(ls "$work"/bad/1_trouser/*.jpg | head -1)" > "$work/bad/1_trouser/truncated.jpg"
: > "$work/bad/2_pullover/empty.jpg"
"$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/bad" --run "$work/run_bad" \
  --set train.steps=6 --set train.batch_size=8 --set train.log_every=1 2> "$work/bad.err" || fail "bad input stopped the run"
grep -q "corrupt.jpg" "$work/bad.err" && grep -q "truncated.jpg" "$work/bad.err" && grep -q "empty.jpg" "$work/bad.err" \
  || fail "warnings must name each bad file: $(cat "$work/bad.err")"
/usr/bin/python3 -c "
import json
rows = [json.loads(l) for l in open('$work/run_bad/log.jsonl')]
assert rows[-1]['skipped'] >= 3, rows[-1]
" || fail "skipped files are not counted in the log"
if "$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/bad" --run "$work/run_fail" \
  --set train.steps=6 --set train.batch_size=8 --set data.on_error=fail 2> "$work/fail.err"; then
  fail "data.on_error=fail did not stop on a corrupt file"
fi
grep -q "\.jpg" "$work/fail.err" || fail "the error does not name the file: $(cat "$work/fail.err")"
mkdir -p "$work/empty"
if "$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/empty" --run "$work/run_empty" 2> "$work/empty.err"; then
  fail "an empty data directory was accepted"
fi
grep -q "empty" "$work/empty.err" || grep -q "no " "$work/empty.err" || fail "unclear empty-directory error: $(cat "$work/empty.err")"

echo "1 passed, 0 failed"
