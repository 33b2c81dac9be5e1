#!/bin/sh
# `d2v compare` on a tiny image set (issue 9): the report and plot are
# written, the k-NN it reports after pretraining is what `d2v eval knn`
# prints for the run's last checkpoint (both go through core/evaluate.c),
# and an evaluation pair whose classes differ is refused with one line
# rather than scored with mismatched labels.
# usage: compare.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -eu
d2v=$1 src=$2 work=$3
. "$src/tests/lib.sh"
need_fmnist
rm -rf "$work"
mkdir -p "$work"
fmnist_split "$work/data" 3 2
train="$work/data/train" test="$work/data/test"

"$d2v" compare --configs "$src/configs/image_micro.ini" --data "$train" --eval "$train:$test" --minutes 0.05 \
  --threads 2 --set train.batch_size=8 --out "$work/out" > "$work/out.log" 2>&1 || { cat "$work/out.log"; fail "compare"; }
[ -s "$work/out/report.md" ] && [ -s "$work/out/curves.png" ] || fail "no report.md or curves.png"
after=$(sed -n 's/^k-NN top-1 before -> after: *image [0-9.]* -> \([0-9.]*\)$/\1/p' "$work/out.log")
[ -n "$after" ] || fail "no k-NN line: $(tail -3 "$work/out.log")"
"$d2v" eval knn --checkpoint "$work/out/runs/image/last.safetensors" --train "$train" --test "$test" \
  > "$work/eval.log" || fail "eval knn"
eval_top1=$(sed -n 's/^d2v eval knn top1=\([0-9.]*\) .*/\1/p' "$work/eval.log")
/usr/bin/python3 -c "import sys; sys.exit(abs($after - $eval_top1) > 5e-4)" \
  || fail "compare reports k-NN $after after pretraining, d2v eval knn says $eval_top1"

# Test classes that differ from the train split's: one line naming both.
cp -r "$test" "$work/other"
first=$(ls "$work/other" | head -1)
mv "$work/other/$first" "$work/other/zzz_$first"
if "$d2v" compare --configs "$src/configs/image_micro.ini" --data "$train" --eval "$train:$work/other" \
    --minutes 0.05 --threads 2 --set train.batch_size=8 --out "$work/bad" > "$work/bad.log" 2>&1; then
  fail "mismatched classes were accepted"
fi
grep -q "have different classes" "$work/bad.log" || fail "unclear message: $(tail -2 "$work/bad.log")"
echo "ok: compare's k-NN after pretraining $after = d2v eval knn $eval_top1; mismatched classes refused"
