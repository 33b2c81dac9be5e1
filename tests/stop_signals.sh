#!/bin/sh
# SIGTERM and SIGINT (issue 7): the run finishes the step it is in, saves a
# checkpoint of exactly that step, prints the command that resumes it and
# exits with 128 + the signal (143, 130). Running the printed command, as
# printed (a --set value with spaces included), continues the run on the
# uninterrupted run's curve bit for bit. A second signal during the last
# step quits at once without saving.
# usage: stop_signals.sh D2V_BINARY SOURCE_DIR WORK_DIR
set -eu
d2v=$1 src=$2 work=$3
. "$src/tests/lib.sh"
need_fmnist
rm -rf "$work"
mkdir -p "$work"
fmnist_split "$work/data" 3 1
config="$src/configs/image_micro.ini"
steps=12
lines() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
# Waits until FILE has at least N lines (at most ~60 s).
wait_lines() {
  polls=0
  while [ "$(lines "$1")" -lt "$2" ]; do
    polls=$((polls + 1))
    [ $polls -lt 6000 ] || fail "timed out waiting for $2 lines in $1"
    sleep 0.01
  done
}
step_of() {
  inspected=$("$d2v" inspect "$1") || return 1
  echo "$inspected" | sed -n 's/^  step = //p'
}

"$d2v" pretrain "$config" --data "$work/data/train" --run "$work/reference" --set train.steps=$steps \
  --set train.batch_size=8 --set train.log_every=1 --set train.threads=1 --set train.save_every=0 \
  --set "data.mean=0.485 0.456 0.406" 2> "$work/reference.err" || { cat "$work/reference.err"; fail "reference run"; }

for sig in TERM INT; do
  run="$work/run_$sig"
  "$d2v" pretrain "$config" --data "$work/data/train" --run "$run" --set train.steps=$steps \
    --set train.batch_size=8 --set train.log_every=1 --set train.threads=1 --set train.save_every=0 \
    --set "data.mean=0.485 0.456 0.406" 2> "$work/$sig.err" &
  pid=$!
  wait_lines "$run/log.jsonl" 3
  kill -s "$sig" "$pid"
  status=0
  wait "$pid" || status=$?
  expected=$([ "$sig" = TERM ] && echo 143 || echo 130)
  [ "$status" -eq "$expected" ] || { cat "$work/$sig.err"; fail "SIG$sig: exit status $status, expected $expected"; }
  grep -q "stopped by SIG$sig; checkpoint saved. Continue with:" "$work/$sig.err" \
    || fail "SIG$sig: no resume message: $(cat "$work/$sig.err")"
  # The checkpoint is of the step the signal interrupted: the last one logged.
  logged=$(lines "$run/log.jsonl")
  [ "$(step_of "$run/last.safetensors")" -eq "$logged" ] || fail "SIG$sig: checkpoint is not of step $logged"
  [ "$logged" -lt $steps ] || fail "SIG$sig: the run ended before the signal; raise steps"
  command=$(sed -n '/Continue with:/{n;p;}' "$work/$sig.err")
  case "$command" in
    *" --resume") ;;
    *) fail "SIG$sig: the printed command does not end in --resume: $command" ;;
  esac
  echo "$command" | grep -q "'data.mean=0.485 0.456 0.406'" || fail "SIG$sig: a --set with spaces is not quoted: $command"
  sh -c "$command" 2> "$work/$sig.resume.err" || { cat "$work/$sig.resume.err"; fail "SIG$sig: the printed command"; }
  /usr/bin/python3 "$src/tests/check_run_log.py" --matches "$work/reference/log.jsonl" "$run/log.jsonl" $steps \
    >/dev/null || fail "SIG$sig: the resumed run left the curve"
done

# A second SIGINT while the stop is pending quits without saving. Batches of
# 30 make a step long enough (~0.5 s) to land both signals inside one.
run="$work/run_twice"
"$d2v" pretrain "$config" --data "$work/data/train" --run "$run" --set train.steps=100 --set train.batch_size=30 \
  --set train.log_every=1 --set train.threads=1 --set train.save_every=1 2> "$work/twice.err" &
pid=$!
wait_lines "$run/log.jsonl" 2
sleep 0.1
kill -INT "$pid"
polls=0
until grep -q "stopping after this step" "$work/twice.err"; do
  polls=$((polls + 1))
  [ $polls -lt 1000 ] || fail "no message after the first SIGINT"
  sleep 0.005
done
kill -INT "$pid" 2>/dev/null || true
status=0
{ wait "$pid"; } 2>/dev/null || status=$?
[ "$status" -eq 130 ] || fail "second SIGINT: status $status"
if grep -q "Continue with" "$work/twice.err"; then
  fail "the second SIGINT did not quit at once (the step finished and was saved): $(cat "$work/twice.err")"
fi
step_of "$run/last.safetensors" > /dev/null || fail "the last checkpoint does not load after the second SIGINT"

echo "1 passed, 0 failed"
