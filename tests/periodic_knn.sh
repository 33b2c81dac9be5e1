#!/bin/sh
# The periodic k-NN of `d2v pretrain` (eval.every, issue 7) on a tiny image
# run:
#   - log.jsonl has "knn" (and "knn_top5") on exactly the evaluated steps;
#   - the number logged for a step equals what `d2v eval knn --checkpoint`
#     prints for that step's checkpoint (best-knn.safetensors and the last);
#   - best-knn.safetensors holds the first step with the highest score, and
#     keep_last rotation (keep_last = 1) leaves it and `last` in place;
#   - evaluating does not change training: the losses equal a run without it;
#   - --resume restores the best score so far: resumed after the best step,
#     later worse scores leave best-knn.safetensors byte for byte as the
#     uninterrupted run's; resumed before it (a crash between writing
#     best-knn and the next checkpoint), the file's score is adopted;
#   - missing, mismatched or corrupt evaluation data stops the run before
#     its first step with one line naming the problem.
# usage: periodic_knn.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -eu
d2v=$1 src=$2 work=$3
. "$src/tests/lib.sh"
need_fmnist
rm -rf "$work"
mkdir -p "$work"
fmnist_split "$work/data" 3 2
config="$src/configs/image_micro.ini"
train="$work/data/train" test="$work/data/test"
common="--set train.steps=12 --set train.batch_size=8 --set train.log_every=5 --set train.threads=2"
evals="--eval-every 3 --eval-train $train --eval-test $test"

# A: evaluation every 3 steps (eval.batch 64 > train.batch_size 8, as
# `d2v eval --batch` defaults), checkpoints every 3 steps, only the newest kept.
# shellcheck disable=SC2086
"$d2v" pretrain "$config" --data "$train" --run "$work/a" $common $evals --set train.save_every=3 \
  --set train.keep_last=1 2> "$work/a.err" || { cat "$work/a.err"; fail "pretrain with eval.every"; }
grep -q "knn 0\.[0-9]* (best)" "$work/a.err" || fail "the first k-NN is not printed as the best: $(cat "$work/a.err")"
best=$(/usr/bin/python3 - "$work/a/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
evaluated = [r["step"] for r in rows if "knn" in r]
assert evaluated == [3, 6, 9, 12], ("knn on steps", evaluated)
assert [r["step"] for r in rows] == [1, 3, 5, 6, 9, 10, 12], ("logged steps", [r["step"] for r in rows])
for r in rows:
    if "knn" in r:
        assert 0 <= r["knn"] <= r["knn_top5"] <= 1, r
scores = [(r["knn"], -r["step"]) for r in rows if "knn" in r]
top, neg_step = max(scores)  # the first step with the highest score
last = [r["knn"] for r in rows if r["step"] == 12][0]
print("%d %.4f %.4f" % (-neg_step, top, last))
PY
) || fail "log.jsonl: $best"
set -- $best
best_step=$1 best_knn=$2 last_knn=$3
[ -f "$work/a/best-knn.safetensors" ] && [ -L "$work/a/last.safetensors" ] || fail "best-knn or last missing: $(ls "$work/a")"
[ "$(ls "$work/a" | grep -c '^checkpoint-')" -eq 1 ] || fail "keep_last=1, but: $(ls "$work/a")"
"$d2v" inspect "$work/a/best-knn.safetensors" > "$work/best.inspect" || fail "inspect best-knn"
grep -q "^  step = $best_step\$" "$work/best.inspect" && grep -q "^  best_knn_step = $best_step\$" "$work/best.inspect" \
  || fail "best-knn.safetensors is not step $best_step: $(grep step "$work/best.inspect")"
"$d2v" inspect "$work/a/last.safetensors" | grep -q "^  best_knn_step = $best_step\$" \
  || fail "the last checkpoint does not record the best step $best_step"

# The logged numbers are what `d2v eval knn --checkpoint` prints.
"$d2v" eval knn --checkpoint "$work/a/best-knn.safetensors" --train "$train" --test "$test" > "$work/best.out" \
  || fail "eval knn best-knn"
grep -q "^d2v eval knn top1=$best_knn " "$work/best.out" \
  || fail "best-knn: logged $best_knn, d2v eval knn says $(tail -1 "$work/best.out")"
"$d2v" eval knn --checkpoint "$work/a/last.safetensors" --train "$train" --test "$test" > "$work/last.out" \
  || fail "eval knn last"
grep -q "^d2v eval knn top1=$last_knn " "$work/last.out" \
  || fail "step 12: logged $last_knn, d2v eval knn says $(tail -1 "$work/last.out")"

# Evaluating leaves training alone: the same losses without it.
# shellcheck disable=SC2086
"$d2v" pretrain "$config" --data "$train" --run "$work/plain" $common --set train.save_every=3 \
  --set train.log_every=1 2>/dev/null \
  || fail "pretrain without eval"
/usr/bin/python3 - "$work/plain/log.jsonl" "$work/a/log.jsonl" <<'PY' || fail "evaluation changed training"
import json, sys
plain, a = ({r["step"]: r["loss"] for r in map(json.loads, open(p))} for p in sys.argv[1:3])
assert all(plain[s] == a[s] for s in a), (plain, a)
PY

# R: the same run keeping every checkpoint, the source of the resumes.
# shellcheck disable=SC2086
"$d2v" pretrain "$config" --data "$train" --run "$work/r" $common $evals --set train.save_every=1 \
  --set train.keep_last=100 2>/dev/null || fail "pretrain R"
/usr/bin/python3 - "$work/a/log.jsonl" "$work/r/log.jsonl" <<'PY' || fail "R differs from A"
import json, sys
a, r = ([(x["step"], x["loss"], x.get("knn")) for x in map(json.loads, open(p))] for p in sys.argv[1:3])
assert a == r, (a, r)
PY

# resume_from STEP NAME: a run directory holding R's checkpoint STEP (as
# `last`), R's best-knn.safetensors and R's log up to STEP, resumed to the end.
resume_from() {
  dir="$work/$2"
  mkdir "$dir"
  name=$(printf 'checkpoint-%08d.safetensors' "$1")
  cp "$work/r/$name" "$work/r/best-knn.safetensors" "$dir/"
  ln -s "$name" "$dir/last.safetensors"
  /usr/bin/python3 -c "
import json, sys
for line in open('$work/r/log.jsonl'):
    if json.loads(line)['step'] <= $1: sys.stdout.write(line)" > "$dir/log.jsonl"
  # shellcheck disable=SC2086
  "$d2v" pretrain "$config" --data "$train" --run "$dir" $common $evals --set train.save_every=1 \
    --set train.keep_last=100 --resume 2> "$dir.err" || { cat "$dir.err"; fail "resume from step $1"; }
  /usr/bin/python3 - "$work/r/log.jsonl" "$dir/log.jsonl" <<'PY' || fail "resumed from step $1: the log left R's"
import json, sys
r, d = ([(x["step"], x["loss"], x.get("knn")) for x in map(json.loads, open(p))] for p in sys.argv[1:3])
assert r == d, (r, d)
PY
  cmp -s "$work/r/best-knn.safetensors" "$dir/best-knn.safetensors" \
    || fail "resumed from step $1: best-knn.safetensors differs from the uninterrupted run's"
}
# After the best step: every later score is no better, so a run that forgot
# the best would replace best-knn at its first evaluation.
resume_from "$best_step" after_best
grep -q "best k-NN so far: top-1 $best_knn at step $best_step" "$work/after_best.err" \
  || fail "the resumed run does not report the best so far: $(cat "$work/after_best.err")"
if [ "$best_step" -eq 12 ]; then
  echo "note: the best k-NN is at the last step, so the resume-after-best check is weak"
fi
# Before it, with best-knn already written (a crash between the two writes).
resume_from $((best_step - 1)) before_best
grep -q "best k-NN so far: top-1 $best_knn at step $best_step" "$work/before_best.err" \
  || fail "best-knn.safetensors's score was not adopted: $(cat "$work/before_best.err")"

# Bad evaluation data stops the run before its first step, in one line.
refuse() {
  what=$1; shift
  # shellcheck disable=SC2086
  if "$d2v" pretrain "$config" --data "$train" --run "$work/refused" $common "$@" 2> "$work/refused.err"; then
    fail "$what: accepted"
  fi
  [ "$(wc -l < "$work/refused.err")" -eq 1 ] || fail "$what: not one line: $(cat "$work/refused.err")"
  [ ! -e "$work/refused" ] || fail "$what: the run directory was created before the error"
  ! grep -q "^step " "$work/refused.err" || fail "$what: training started"
}
refuse "a missing eval.test" --eval-every 3 --eval-train "$train" --eval-test "$work/nonexistent"
grep -q "nonexistent" "$work/refused.err" || fail "missing eval.test not named: $(cat "$work/refused.err")"
refuse "eval.every without sets" --eval-every 3
grep -q "eval.train and eval.test" "$work/refused.err" || fail "unclear: $(cat "$work/refused.err")"
mkdir -p "$work/two_classes"
cp -r "$test/0_tshirt" "$test/1_trouser" "$work/two_classes/"
refuse "other classes" --eval-every 3 --eval-train "$train" --eval-test "$work/two_classes"
grep -q "different classes" "$work/refused.err" || fail "class mismatch: $(cat "$work/refused.err")"
cp -r "$test" "$work/corrupt"
echo "not a jpeg" > "$work/corrupt/3_dress/corrupt.jpg"
refuse "a corrupt test image" --eval-every 3 --eval-train "$train" --eval-test "$work/corrupt"
grep -q "corrupt.jpg" "$work/refused.err" || fail "corrupt file not named: $(cat "$work/refused.err")"
mkdir -p "$work/empty"
refuse "an empty eval.train" --eval-every 3 --eval-train "$work/empty" --eval-test "$test"

echo "k-NN top-1 at steps 3, 6, 9, 12; best $best_knn at step $best_step = d2v eval knn; last $last_knn = d2v eval knn"
echo "1 passed, 0 failed"
