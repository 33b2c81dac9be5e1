#!/bin/sh
# End to end on real audio: spoken digits synthesised by espeak-ng, 20
# pretraining steps, determinism and resume, both batching modes on clips of
# different lengths, embed, eval knn, and bad files skipped or refused.
# usage: e2e_speech.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -eu
d2v=$1 src=$2 work=$3
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
  echo "SKIP: espeak-ng and sox are not installed (scripts/install-deps.sh installs them)"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work"
/usr/bin/python3 "$src/scripts/make_words.py" --out "$work/data" --train-per-class 2 --test-per-class 1 >/dev/null
fail() { echo "FAIL: $*"; exit 1; }
micro="$src/configs/speech_micro.ini"
small="--set train.batch_size=4 --set train.log_every=1 --set train.threads=2"

# Clips of other lengths and formats: 0.6 s FLAC at 44.1 kHz, 0.75 s OGG
# stereo, so batches mix lengths and go through the resampler.
first=$(ls "$work"/data/train/one/*.wav | head -1)
sox "$first" -r 44100 "$work/data/train/one/short.flac" trim 0 0.6
sox "$first" -c 2 "$work/data/train/two/stereo.ogg" trim 0 0.75

# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/data/train" --run "$work/run" --set train.steps=20 --set train.save_every=10 \
  $small 2> "$work/pretrain.err" || { cat "$work/pretrain.err"; fail "pretrain exited non-zero"; }
/usr/bin/python3 "$src/tests/check_run_log.py" "$work/run/log.jsonl" 20 || fail "log values"
"$d2v" inspect "$work/run/last.safetensors" | grep -q "frontend.pos_conv.4.weight" || fail "inspect lacks the pos conv"

# Same seed, same numbers; a resumed run continues the same curve.
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/data/train" --run "$work/run_again" --set train.steps=20 \
  --set train.save_every=10 $small 2>/dev/null || fail "second run"
mkdir "$work/resumed"
cp "$work/run/checkpoint-00000010.safetensors" "$work/resumed/"
ln -s checkpoint-00000010.safetensors "$work/resumed/last.safetensors"
head -10 "$work/run/log.jsonl" > "$work/resumed/log.jsonl"
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/data/train" --run "$work/resumed" --resume --set train.steps=20 \
  --set train.save_every=10 $small 2>/dev/null || fail "resume"
/usr/bin/python3 "$src/tests/check_run_log.py" --same-losses "$work/run/log.jsonl" "$work/run_again/log.jsonl" \
  "$work/resumed/log.jsonl" || fail "determinism or resume"

# Padded batches: every row keeps its length, padding is masked out.
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/data/train" --run "$work/run_pad" --set train.steps=6 \
  --set data.batching=pad $small 2> "$work/pad.err" || { cat "$work/pad.err"; fail "pad batching"; }

"$d2v" embed --checkpoint "$work/run/last.safetensors" --data "$work/data/test" --out "$work/test.npy" 2>/dev/null \
  || fail "embed"
/usr/bin/python3 -c "
import numpy
f = numpy.load('$work/test.npy')
assert f.shape == (10, 128) and f.dtype == numpy.float32 and numpy.isfinite(f).all(), f.shape
" || fail "features"
"$d2v" eval knn --checkpoint "$work/run/last.safetensors" --train "$work/data/train" --test "$work/data/test" \
  > "$work/knn.out" || fail "eval knn"
grep -q "^d2v eval knn top1=" "$work/knn.out" || fail "eval knn output"

# Bad input: each bad file is skipped with a warning naming it and counted;
# with data.on_error=fail the run stops naming the file. A clip shorter than
# data.min_samples is a size filter, skipped in both modes.
cp -r "$work/data/train" "$work/bad"
echo "not audio at all" > "$work/bad/zero/text.wav"
: > "$work/bad/one/empty.wav"
head -c 44 "$first" > "$work/bad/two/header_only.wav"
sox -D -n -r 16000 -c 1 -b 16 "$work/bad/three/silent.wav" trim 0 1  # -D: no dither, true zeros
sox "$first" "$work/bad/four/tiny.wav" trim 0 0.2
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/bad" --run "$work/run_bad" --set train.steps=10 $small \
  2> "$work/bad.err" || { cat "$work/bad.err"; fail "bad input stopped the run"; }
for name in text.wav empty.wav header_only.wav silent.wav tiny.wav; do
  grep -q "$name" "$work/bad.err" || fail "no warning names $name: $(cat "$work/bad.err")"
done
/usr/bin/python3 -c "
import json
rows = [json.loads(l) for l in open('$work/run_bad/log.jsonl')]
assert rows[-1]['skipped'] >= 5, rows[-1]
" || fail "skipped files are not counted in the log"
rm "$work/bad/zero/text.wav" "$work/bad/one/empty.wav" "$work/bad/two/header_only.wav"
# shellcheck disable=SC2086
if "$d2v" pretrain "$micro" --data "$work/bad" --run "$work/run_fail" --set train.steps=10 $small \
  --set data.on_error=fail 2> "$work/fail.err"; then
  fail "data.on_error=fail did not stop on a silent file"
fi
grep -q "silent.wav" "$work/fail.err" || fail "the error does not name the file: $(cat "$work/fail.err")"
rm "$work/bad/three/silent.wav"
# shellcheck disable=SC2086
"$d2v" pretrain "$micro" --data "$work/bad" --run "$work/run_short" --set train.steps=12 $small \
  --set data.on_error=fail 2> "$work/short.err" || fail "a too-short clip stopped a data.on_error=fail run: $(cat "$work/short.err")"
grep -q "tiny.wav" "$work/short.err" || fail "the too-short clip was never met or not reported"

echo "1 passed, 0 failed"
