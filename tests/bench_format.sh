#!/bin/sh
# `d2v bench` runs on synthetic inputs of each modality (no dataset, and for
# text no tokenizer files) and ends with the machine-readable line. Only the
# format is checked: benchmarks are never timed tests. Speech runs a smaller
# batch to keep the test short on 2 loaded cores. --data (the loader's rate)
# runs on three synthetic clips made with sox.
# usage: bench_format.sh D2V_BINARY SOURCE_DIR
set -eu
d2v=$1 src=$2
fail() { echo "FAIL: $*"; exit 1; }
number='[0-9][0-9.e+-]*'
line_re="^d2v step_ms=$number min_ms=$number max_ms=$number positions_per_s=$number gflops=$number mfu=$number rss_mb=$number\$"
check() {
  name=$1; shift
  out=$("$d2v" bench "$@" --steps 2 --warmup 1 --threads 2) || fail "$name: d2v bench exited $?"
  last=$(printf '%s\n' "$out" | tail -n 1)
  printf '%s\n' "$last" | grep -Eq "$line_re" || fail "$name: last line not in the bench format: $last"
  echo "ok $name: $last"
}
check image_micro "$src/configs/image_micro.ini"
check speech_micro "$src/configs/speech_micro.ini" --set train.batch_size=2
# A tokenizer path that does not exist: the front-end comes from data.vocab_size.
check text_micro "$src/configs/text_micro.ini" --set data.tokenizer=/nonexistent/tokenizer
# Errors are one line and a non-zero exit.
if "$d2v" bench "$src/configs/image_micro.ini" --steps 0 2> err.txt; then fail "--steps 0 accepted"; fi
[ "$(wc -l < err.txt)" -eq 1 ] || fail "--steps 0: expected a one-line error"
if "$d2v" bench "$src/configs/text_micro.ini" --set data.tokenizer=/nonexistent --set data.vocab_size=0 2> err.txt; then
  fail "text without a tokenizer and without data.vocab_size accepted"
fi
[ "$(wc -l < err.txt)" -eq 1 ] || fail "text without vocab: expected a one-line error: $(cat err.txt)"
# --data PATH also times the loader on real files (three one-second clips).
mkdir -p bench_clips
for i in 1 2 3; do sox -n -r 16000 -c 1 -b 16 "bench_clips/c$i.wav" synth 1 whitenoise vol 0.3 || fail "sox"; done
out=$("$d2v" bench "$src/configs/speech_micro.ini" --set train.batch_size=2 --steps 1 --warmup 0 --threads 2 \
  --data bench_clips) || fail "--data: d2v bench exited $?"
printf '%s\n' "$out" | grep -Eq "^loader +$number s of audio/s" || fail "--data: no loader rate line: $out"
printf '%s\n' "$out" | grep -Eq "^step consumes +$number s of audio/s: the loader is $number""x ahead" \
  || fail "--data: no comparison with the step: $out"
printf '%s\n' "$out" | tail -n 1 | grep -Eq "$line_re" || fail "--data: last line not in the bench format"
echo "ok --data: $(printf '%s\n' "$out" | grep '^loader')"
# A wrong --data fails at once (no step was run: nothing on stdout), in one line.
if "$d2v" bench "$src/configs/image_micro.ini" --data /nonexistent/dir > out.txt 2> err.txt; then
  fail "--data /nonexistent accepted"
fi
[ "$(wc -l < err.txt)" -eq 1 ] && grep -q "/nonexistent/dir" err.txt || fail "--data: expected a one-line error naming the path: $(cat err.txt)"
[ ! -s out.txt ] || fail "--data /nonexistent: steps ran before the error"
rm -rf err.txt out.txt bench_clips
echo "ok errors"
