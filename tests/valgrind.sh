#!/bin/sh
# valgrind memcheck over a short run of each command that matters: per
# modality a 2-step pretrain that saves a checkpoint every step and a --resume
# to step 3 (a few bad files in the data, so the skip paths run too), eval knn,
# inspect, and tokenizer train and encode. Any memcheck error (an invalid read
# or write, a use of uninitialised memory, a bad free, a definitely lost
# block) fails the test, as does d2v failing. The models are shrunk with
# --set (2 layers, D=48, 3 heads) so the whole test takes a minute or two;
# the code paths are the micro configs'. Not part of `meson test`: .ci/run
# runs it on its own build.
#
# D2V_BINARY must not use AVX-512, which valgrind 3.19 cannot run:
#   meson setup build-vg -Dmarch=x86-64-v3 -Dbuildtype=debugoptimized && ninja -C build-vg d2v
#   tests/valgrind.sh build-vg/d2v . /tmp/d2v-valgrind
# A failure prints memcheck's report; for the origin of an uninitialised value
# rerun that command with --track-origins=yes (slower, so not the default).
# usage: valgrind.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -eu
d2v=$1 src=$2 work=$3
fail() { echo "FAIL: $*"; exit 1; }
command -v valgrind >/dev/null || fail "valgrind is not installed (scripts/install-deps.sh installs it)"
[ -d /usr/share/datasets/fashion-mnist ] || fail "dataset-fashion-mnist is not installed (scripts/install-deps.sh)"
command -v espeak-ng >/dev/null && command -v sox >/dev/null || fail "espeak-ng and sox are not installed (scripts/install-deps.sh)"
# OpenBLAS's AVX2 kernels; its AVX-512 ones would stop valgrind as well.
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"

# Errors: every memcheck error kind, plus definitely lost blocks at exit.
# Possibly lost and still reachable blocks are not counted or printed: at exit
# they are libgomp's, its thread pool (reachable) and its worker threads' TLS
# (possibly lost), which live as long as the process. Exit status 99 means
# memcheck found errors. No suppressions are needed today; if a library's own
# one-time allocation ever is, tests/valgrind.supp is read (library frames
# only, a comment each saying why it is not ours).
vgflags="--tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
  --show-leak-kinds=definite --track-origins=no --num-callers=30 -q"
if [ -f "$src/tests/valgrind.supp" ]; then
  vgflags="$vgflags --suppressions=$src/tests/valgrind.supp"
fi

rm -rf "$work"
mkdir -p "$work"
errors=0
# vg NAME ARGS...: runs d2v ARGS under memcheck; stdout to NAME.out, stderr to
# NAME.err, memcheck's report to NAME.vg. A memcheck error is counted and the
# run goes on (later runs need only d2v's outputs); d2v failing stops it.
vg() {
  name=$1
  shift
  start=$(date +%s.%N)
  rc=0
  # shellcheck disable=SC2086
  valgrind $vgflags --log-file="$work/$name.vg" "$d2v" "$@" > "$work/$name.out" 2> "$work/$name.err" || rc=$?
  elapsed=$(echo "$start $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }')
  if [ $rc -eq 99 ]; then
    echo "$name: ${elapsed} s  MEMCHECK ERRORS (d2v $*)"
    cat "$work/$name.vg"
    errors=$((errors + 1))
  elif [ $rc -ne 0 ]; then
    echo "$name: ${elapsed} s  d2v exited with status $rc (d2v $*)"
    cat "$work/$name.err" "$work/$name.vg"
    if grep -q "unhandled instruction" "$work/$name.vg"; then
      echo "valgrind cannot run this binary's instructions: build it with -Dmarch=x86-64-v3"
    fi
    fail "$name"
  else
    echo "$name: ${elapsed} s"
  fi
}
total_start=$(date +%s.%N)

# Image: 10 train and 10 test Fashion-MNIST JPEGs for eval knn. Pretraining
# reads 4 files in its 6 draws, each at least once: 2 of those JPEGs, a
# corrupt and a truncated one (libjpeg's error exit).
/usr/bin/python3 "$src/scripts/make_fmnist.py" --out "$work/image" --train-per-class 1 --test-per-class 1 >/dev/null
mkdir "$work/image/pretrain"
cp "$work"/image/train/0_tshirt/*.jpg "$work"/image/train/1_trouser/*.jpg "$work/image/pretrain/"
echo "not a jpeg" > "$work/image/pretrain/corrupt.jpg"
head -c 300 "$(ls "$work"/image/train/2_pullover/*.jpg | head -1)" > "$work/image/pretrain/truncated.jpg"
small="--set model.layers=2 --set model.dim=48 --set model.heads=3 --set model.ffn_dim=80 --set target.top_k=2
  --set train.batch_size=2 --set train.log_every=1 --set train.save_every=1"
# shellcheck disable=SC2086
vg image_pretrain pretrain "$src/configs/image_micro.ini" --data "$work/image/pretrain" --run "$work/image_run" \
  $small --set train.steps=2 --set train.threads=1
# shellcheck disable=SC2086
vg image_resume pretrain "$src/configs/image_micro.ini" --data "$work/image/pretrain" --run "$work/image_run" \
  --resume $small --set train.steps=3 --set train.threads=2
vg image_inspect inspect "$work/image_run/last.safetensors"
grep -q "teacher.blocks.1.fc2.weight" "$work/image_inspect.out" || fail "inspect lacks the teacher"
vg image_knn eval knn --checkpoint "$work/image_run/last.safetensors" --train "$work/image/train" \
  --test "$work/image/test" --k 3
grep -q "^d2v eval knn top1=" "$work/image_knn.out" || fail "eval knn output: $(cat "$work/image_knn.out")"

# Speech: 4 + 4 espeak-ng clips of 1 s (4 of the 10 words) for eval knn (it
# reads the first data.max_samples: a shorter crop can miss the word and be
# silent), a narrower CNN. Pretraining reads 4 files: 2 of those clips, a
# 44.1 kHz FLAC (the resampler) and a file that is not audio.
/usr/bin/python3 "$src/scripts/make_words.py" --out "$work/speech" --train-per-class 1 --test-per-class 1 >/dev/null
for dir in "$work"/speech/train/* "$work"/speech/test/*; do
  case ${dir##*/} in zero | one | two | three) ;; *) rm -r "$dir" ;; esac
done
mkdir "$work/speech/pretrain"
cp "$work"/speech/train/zero/*.wav "$work/speech/pretrain/zero.wav"
cp "$work"/speech/train/one/*.wav "$work/speech/pretrain/one.wav"
sox "$work/speech/pretrain/one.wav" -r 44100 "$work/speech/pretrain/short.flac" trim 0 0.6
echo "not audio at all" > "$work/speech/pretrain/text.wav"
speech="--set frontend.conv_spec=32x10x5,32x3x2*4,32x2x2*2 --set frontend.pos_conv_groups=4
  --set frontend.pos_conv_depth=2 --set data.max_samples=16000 --set data.min_samples=8000"
# shellcheck disable=SC2086
vg speech_pretrain pretrain "$src/configs/speech_micro.ini" --data "$work/speech/pretrain" --run "$work/speech_run" \
  $small $speech --set train.steps=2 --set train.threads=2
# shellcheck disable=SC2086
vg speech_resume pretrain "$src/configs/speech_micro.ini" --data "$work/speech/pretrain" --run "$work/speech_run" \
  --resume $small $speech --set train.steps=3 --set train.threads=1
vg speech_knn eval knn --checkpoint "$work/speech_run/last.safetensors" --train "$work/speech/train" \
  --test "$work/speech/test" --k 3
grep -q "^d2v eval knn top1=" "$work/speech_knn.out" || fail "eval knn output: $(cat "$work/speech_knn.out")"

# Text: two license texts (45 kB), a 400-token tokenizer trained and used on
# them, a Latin-1 file (repaired UTF-8) and one with a NUL byte (skipped).
mkdir -p "$work/corpus"
for f in GPL-3 Apache-2.0; do
  awk 'BEGIN { RS = ""; ORS = "\n" } { gsub(/[ \t\n]+/, " "); sub(/^ /, ""); print }' \
    "/usr/share/common-licenses/$f" > "$work/corpus/$f.txt"
done
vg tokenizer_train tokenizer train --vocab-size 400 --out "$work/tok" "$work/corpus"/*.txt
vg tokenizer_encode tokenizer encode --tokenizer "$work/tok" "$work/corpus/Apache-2.0.txt"
[ -s "$work/tokenizer_encode.out" ] || fail "tokenizer encode printed nothing"
printf 'caf\351 au lait\n' > "$work/corpus/latin1.txt"
printf 'Some text\nand then bin\000ary\n' > "$work/corpus/binary.txt"
text="--set data.tokenizer=$work/tok --set data.vocab_size=0 --set data.seq_len=24"
# shellcheck disable=SC2086
vg text_pretrain pretrain "$src/configs/text_micro.ini" --data "$work/corpus" --run "$work/text_run" \
  $small $text --set train.steps=2 --set train.threads=1
# shellcheck disable=SC2086
vg text_resume pretrain "$src/configs/text_micro.ini" --data "$work/corpus" --run "$work/text_run" \
  --resume $small $text --set train.steps=3 --set train.threads=2
printf 'animal\tthe dog barked at the cat\nanimal\ta horse and a cow\nsoftware\tcopy the source code\nsoftware\tthe program and its license\n' \
  > "$work/train.tsv"
printf 'animal\tthe cat and the dog\nsoftware\tthe source code of the program\n' > "$work/test.tsv"
vg text_knn eval knn --checkpoint "$work/text_run/last.safetensors" --train "$work/train.tsv" \
  --test "$work/test.tsv" --k 3
grep -q "^d2v eval knn top1=" "$work/text_knn.out" || fail "eval knn output: $(cat "$work/text_knn.out")"

grep -q "corrupt.jpg" "$work/image_pretrain.err" "$work/image_resume.err" \
  && grep -q "truncated.jpg" "$work/image_pretrain.err" "$work/image_resume.err" \
  && grep -q "text.wav" "$work/speech_pretrain.err" "$work/speech_resume.err" \
  && grep -q "binary.txt" "$work/text_pretrain.err" && grep -q "latin1.txt" "$work/text_pretrain.err" \
  || fail "pretraining did not meet every bad file"
for m in image speech text; do
  [ "$(wc -l < "$work/${m}_run/log.jsonl")" -eq 3 ] || fail "$m: log.jsonl should have 3 lines"
  grep -q "resuming from .*checkpoint-00000002" "$work/${m}_resume.err" || fail "$m: the resume did not load step 2"
done
echo "all: $(echo "$total_start $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }') s"
[ $errors -eq 0 ] || fail "memcheck found errors in $errors run(s)"
echo "1 passed, 0 failed"
