#!/bin/sh
# Data-parallel training (issue 8) against one process, 20 steps per
# modality on small models: `mpirun -np 2` with train.batch_size=B (each
# rank B/2 rows, here B = 4) logs the loss curve one process logs with B, within float
# tolerance (sums in another order); train.update_freq=2 on one process
# (two micro-batches of B/2) logs it too (image, text; see README for
# speech). The 2-rank runs compare a parameter checksum across ranks every
# step (train.sync_check_every=1), which fails the run if they diverge.
# Resuming a 2-rank checkpoint with 1 rank warns. The 2-rank image run also
# runs the periodic k-NN (every rank evaluates, rank 0 writes best-knn): the
# curve is unchanged and the logged score is what `d2v eval knn` prints.
# usage: mpi_equivalence.sh D2V_BINARY SOURCE_DIR WORK_DIR MPIRUN|none
set -eu
d2v=$1 src=$2 work=$3 mpirun=$4
if [ "$mpirun" = none ]; then
  echo "SKIP: this d2v was built without MPI (install libopenmpi-dev openmpi-bin: scripts/install-deps.sh;"
  echo "      then meson setup --reconfigure build, or -Dmpi=enabled to make it required)"
  exit 77
fi
. "$src/tests/lib.sh"
need_fmnist
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng is not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Under AddressSanitizer (CI's second pass) LeakSanitizer reports what Open
# MPI, its dlopen'ed components and OpenBLAS's threads keep at exit (stacks end
# in libmpi, libopenblas or unloaded plugins: not ours, and not suppressible by
# name once the plugin is unloaded). d2v's own allocations are leak-checked by
# every other test, which runs the same code without MPI.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
rm -rf "$work"
mkdir -p "$work/corpus"

# Small data of each modality, made here (as the e2e tests do).
fmnist_split "$work/img" 2 1
/usr/bin/python3 "$src/scripts/make_words.py" --out "$work/wav" --train-per-class 2 --test-per-class 1 >/dev/null
for f in GPL-3 Apache-2.0; do
  awk 'BEGIN { RS = ""; ORS = "\n" } { gsub(/[ \t\n]+/, " "); sub(/^ /, ""); print }' \
    "/usr/share/common-licenses/$f" > "$work/corpus/$f.txt"
done
"$d2v" tokenizer train --vocab-size 400 --out "$work/tok" "$work/corpus"/*.txt 2>/dev/null || fail "tokenizer train"

common="--set train.steps=20 --set train.batch_size=4 --set train.log_every=1 --set train.save_every=10
  --set train.threads=1 --set model.layers=2 --set target.top_k=2"
# Compares two logs' losses step by step: relative difference below 1e-4.
same_curve() {
  /usr/bin/python3 - "$1" "$2" <<'PY' || fail "$3"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 20, (len(a), len(b))
worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
print(f"{sys.argv[2]}: max relative loss difference {worst:.2e} over 20 steps")
assert worst < 1e-4, worst
assert all(x["masked"] == y["masked"] for x, y in zip(a, b)), "masked counts differ"
PY
}

for mod in image text speech; do
  case $mod in
    image) cfg=image_micro data="$work/img/train" extra="--set model.dim=64 --set model.ffn_dim=128" ;;
    text) cfg=text_micro data="$work/corpus" extra="--set data.tokenizer=$work/tok --set data.vocab_size=0" ;;
    speech) cfg=speech_micro data="$work/wav/train" extra="--set data.max_samples=8000 --set data.min_samples=4000" ;;
  esac
  # shellcheck disable=SC2086
  "$d2v" pretrain "$src/configs/$cfg.ini" --data "$data" --run "$work/$mod-1" $common $extra 2> "$work/$mod-1.err" \
    || { cat "$work/$mod-1.err"; fail "$mod: 1 rank"; }
  evals=""
  [ $mod = image ] && evals="--eval-every 10 --eval-train $work/img/train --eval-test $work/img/test"
  # shellcheck disable=SC2086
  timeout 120 "$mpirun" -np 2 "$d2v" pretrain "$src/configs/$cfg.ini" --data "$data" --run "$work/$mod-2" \
    $common $extra $evals --set train.sync_check_every=1 > "$work/$mod-2.err" 2>&1 \
    || { cat "$work/$mod-2.err"; fail "$mod: 2 ranks"; }
  same_curve "$work/$mod-1/log.jsonl" "$work/$mod-2/log.jsonl" "$mod: 2 ranks x 2 rows differ from 1 rank x 4"
  if [ $mod != speech ]; then
    # shellcheck disable=SC2086
    "$d2v" pretrain "$src/configs/$cfg.ini" --data "$data" --run "$work/$mod-acc" $common $extra \
      --set train.update_freq=2 2> "$work/$mod-acc.err" || { cat "$work/$mod-acc.err"; fail "$mod: update_freq"; }
    same_curve "$work/$mod-1/log.jsonl" "$work/$mod-acc/log.jsonl" "$mod: update_freq=2 differs from 1 x 4"
  fi
done

# Only rank 0 wrote the run directory: one log line per step, checkpoints.
[ -f "$work/image-2/checkpoint-00000020.safetensors" ] || fail "2 ranks: no checkpoint"
"$d2v" inspect "$work/image-2/last.safetensors" | grep -q 'world_size' || fail "checkpoint lacks world_size"
knn=$(/usr/bin/python3 - "$work/image-2/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
assert [r["step"] for r in rows if "knn" in r] == [10, 20], "k-NN not logged on steps 10 and 20"
best = max((r["knn"], -r["step"]) for r in rows if "knn" in r)
print("%.4f %d" % (best[0], -best[1]))
PY
) || fail "2 ranks: periodic k-NN in the log"
set -- $knn
"$d2v" inspect "$work/image-2/best-knn.safetensors" | grep -q "^  best_knn_step = $2\$" \
  || fail "2 ranks: best-knn.safetensors is not step $2"
OMP_NUM_THREADS=1 "$d2v" eval knn --checkpoint "$work/image-2/best-knn.safetensors" --train "$work/img/train" \
  --test "$work/img/test" > "$work/image-2.knn" || fail "eval knn of the 2-rank best-knn"
grep -q "^d2v eval knn top1=$1 " "$work/image-2.knn" \
  || fail "2 ranks: logged k-NN $1, d2v eval knn says $(tail -1 "$work/image-2.knn")"

# An odd batch does not split over 2 ranks: a clear error, the job ends.
# shellcheck disable=SC2086
if timeout 60 "$mpirun" -np 2 "$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/img/train" \
    --run "$work/odd" $common --set train.batch_size=5 > "$work/odd.err" 2>&1; then
  fail "batch 7 on 2 ranks was accepted"
fi
grep -q "must divide by ranks (2)" "$work/odd.err" || fail "unclear message: $(cat "$work/odd.err")"

# Resuming the 2-rank run's step-10 checkpoint on 1 rank: a warning, and the
# curve goes on within float tolerance.
mkdir "$work/resumed"
cp "$work/image-2/checkpoint-00000010.safetensors" "$work/resumed/"
ln -s checkpoint-00000010.safetensors "$work/resumed/last.safetensors"
# shellcheck disable=SC2086
"$d2v" pretrain "$src/configs/image_micro.ini" --data "$work/img/train" --run "$work/resumed" --resume $common \
  --set model.dim=64 --set model.ffn_dim=128 2> "$work/resumed.err" || { cat "$work/resumed.err"; fail "resume"; }
grep -q "written by 2 ranks, this run has 1" "$work/resumed.err" || fail "no warning: $(cat "$work/resumed.err")"
/usr/bin/python3 - "$work/image-1/log.jsonl" "$work/resumed/log.jsonl" <<'PY' || fail "resumed run left the curve"
import json, sys
ref = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1]))}
rows = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in rows] == list(range(11, 21)), [r["step"] for r in rows]
assert all(abs(r["loss"] - ref[r["step"]]) < 1e-4 * abs(ref[r["step"]]) for r in rows)
PY
echo "ok"
