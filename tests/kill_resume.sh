#!/bin/sh
# SIGKILL at random moments, many times, each time resuming (issue 7): a
# short image_micro run saving every step is killed D2V_KILLS times (default
# 20): at random times from launch or from the process's first step, and the
# moment a checkpoint's temporary file appears (mid-write). After every kill:
#   - last.safetensors, if there is one, names a complete checkpoint (never a
#     temporary file) that `d2v inspect` reads, and so does every
#     checkpoint-N.safetensors in the directory;
#   - its step is at least the last one the killed process reported saved
#     (no step is lost beyond the last checkpoint) and never goes backwards.
# Then a final resume finishes the run, and every loss logged by any of the
# processes (log.jsonl is appended to; steps after a checkpoint are logged
# again by the next process) equals the uninterrupted run's, bit for bit.
# usage: kill_resume.sh D2V_BINARY SOURCE_DIR WORK_DIR
# D2V_KILL_SEED fixes the kill times (printed on failure) to replay a run;
# D2V_KILL_STEPS (default 300) lengthens the run for many more kills. 100
# was too few on a faster CPU (a Zen 5 here): by the 13th of 20 kills the
# resumed run reached its end before the kill came.
set -eu
d2v=$1 src=$2 work=$3
. "$src/tests/lib.sh"
need_fmnist
kills=${D2V_KILLS:-20}
seed=${D2V_KILL_SEED:-$(date +%s)}
steps=${D2V_KILL_STEPS:-300}
rm -rf "$work"
mkdir -p "$work"
fmnist_split "$work/data" 3 1
fail() { echo "FAIL (D2V_KILL_SEED=$seed): $*"; exit 1; }
config="$src/configs/image_micro.ini"
common="--set train.steps=$steps --set train.batch_size=8 --set train.log_every=1 --set train.threads=1"

# shellcheck disable=SC2086
"$d2v" pretrain "$config" --data "$work/data/train" --run "$work/reference" $common --set train.save_every=0 \
  2> "$work/reference.err" || { cat "$work/reference.err"; fail "the uninterrupted run"; }

run="$work/run"
step_of() {
  inspected=$("$d2v" inspect "$1") || return 1
  echo "$inspected" | sed -n 's/^  step = //p'
}
delays=$(/usr/bin/python3 -c "
import random
r = random.Random($seed)
print(' '.join('%.3f' % r.uniform(0.05, 1.2) for _ in range($kills)))")

i=0 last_step=0 mid_write=0 no_checkpoint=0 resumed_from=""
for delay in $delays; do
  i=$((i + 1))
  resume=""
  [ -L "$run/last.safetensors" ] && resume=--resume
  # shellcheck disable=SC2086
  "$d2v" pretrain "$config" --data "$work/data/train" --run "$run" $common --set train.save_every=1 \
    --set train.keep_last=2 $resume 2> "$work/kill$i.err" &
  pid=$!
  # Three kinds of kill, in turn: at a random time from launch (often
  # during start-up: the lock, temp cleanup, log repair); at a random time
  # after this process's first step; and mid-write, as soon as its next
  # checkpoint's temporary file exists after that. Timing from the first
  # step keeps runs progressing when start-up is slow (sanitizer builds).
  if [ $((i % 3)) -ne 1 ]; then
    polls=0
    while [ $polls -lt 3000 ] && ! grep -q '^step ' "$work/kill$i.err" 2>/dev/null \
          && kill -0 "$pid" 2>/dev/null; do
      polls=$((polls + 1))
      sleep 0.01
    done
  fi
  if [ $((i % 3)) -ne 1 ]; then
    delay=$(echo "$delay" | awk '{print $1 / 2}')
  fi
  if [ $((i % 3)) -eq 0 ]; then
    sleep "$delay"
    polls=0
    while [ $polls -lt 300 ] && ! ls "$run" 2>/dev/null | grep -q "^checkpoint-.*\.tmp\.$pid\$"; do
      polls=$((polls + 1))
      sleep 0.005
    done
  else
    sleep "$delay"
  fi
  kill -KILL "$pid" 2>/dev/null || true
  # (braces: the shell's own "Killed" notice goes to /dev/null too)
  if { wait "$pid"; } 2>/dev/null; then
    fail "kill $i: the run finished before it was killed; raise steps"
  fi

  if ls "$run" 2>/dev/null | grep -q "^checkpoint-.*\.tmp\.$pid\$"; then
    mid_write=$((mid_write + 1))
  fi
  if [ ! -L "$run/last.safetensors" ]; then
    no_checkpoint=$((no_checkpoint + 1))
    [ "$last_step" -eq 0 ] || fail "kill $i: last.safetensors disappeared"
    continue
  fi
  target=$(readlink "$run/last.safetensors")
  echo "$target" | grep -Eq '^checkpoint-[0-9]{8}\.safetensors$' || fail "kill $i: last.safetensors -> $target"
  step=$(step_of "$run/last.safetensors") || fail "kill $i: last.safetensors ($target) does not load"
  for f in "$run"/checkpoint-????????.safetensors; do
    "$d2v" inspect "$f" > /dev/null || fail "kill $i: $f does not load"
  done
  saved=$(sed -n 's/^saved .*checkpoint-0*\([0-9][0-9]*\)\.safetensors$/\1/p' "$work/kill$i.err" | tail -1)
  [ -z "$saved" ] || [ "$step" -ge "$saved" ] || fail "kill $i: reported saving step $saved, but last is step $step"
  [ "$step" -ge "$last_step" ] || fail "kill $i: last went back from step $last_step to $step"
  last_step=$step
  resumed_from="$resumed_from $step"
done

resume=""
[ -L "$run/last.safetensors" ] && resume=--resume
# shellcheck disable=SC2086
"$d2v" pretrain "$config" --data "$work/data/train" --run "$run" $common --set train.save_every=1 \
  --set train.keep_last=2 $resume 2> "$work/final.err" || { cat "$work/final.err"; fail "the final resume"; }
[ "$(step_of "$run/last.safetensors")" -eq "$steps" ] || fail "the final run did not reach step $steps"
leftovers=$(ls "$run" | grep '\.tmp\.' || true)
[ -z "$leftovers" ] || fail "temporary files left after a clean finish: $leftovers"
[ "$(ls "$run" | grep -c '^checkpoint-')" -eq 2 ] || fail "keep_last=2, but: $(ls "$run")"
matched=$(/usr/bin/python3 "$src/tests/check_run_log.py" --matches "$work/reference/log.jsonl" "$run/log.jsonl" \
  "$steps") || fail "$matched"

echo "$kills SIGKILLs (seed $seed): $mid_write during a checkpoint write, $no_checkpoint before the first checkpoint;"
echo "  last checkpoint after each kill: steps$resumed_from"
echo "  $matched"
echo "1 passed, 0 failed"
