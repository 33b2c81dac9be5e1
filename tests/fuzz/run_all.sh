#!/bin/sh
# Builds the libFuzzer targets (clang, -Dfuzz=true, ASan + UBSan) and runs
# each for a bounded time over its corpus, one after the other (issue 7).
#   tests/fuzz/run_all.sh [TARGET...]
# Environment:
#   D2V_FUZZ_SECONDS  seconds per target (default 30)
#   D2V_FUZZ_BUILD    build directory (default build-fuzz)
#   D2V_FUZZ_SEED     libFuzzer's seed (default 1, so a CI run is repeatable;
#                     set another to explore elsewhere)
# The repository's corpus (tests/fuzz/corpus/<target>/) is only read; inputs
# the fuzzer finds go to BUILD/fuzz-corpus/<target>/, crashes to
# BUILD/fuzz-crashes/. A crash, leak, timeout (10 s per input) or memory
# blow-up (over 2 GB) fails the script. A crash is fixed in the code it
# names, and its input added to tests/fuzz/corpus/<target>/ as a regression.
# Without clang the script says so and exits 0 (nothing to run).
set -eu
cd "$(dirname "$0")/../.."
seconds=${D2V_FUZZ_SECONDS:-30}
seed=${D2V_FUZZ_SEED:-1}
build=${D2V_FUZZ_BUILD:-build-fuzz}
all="safetensors config tokenizer tokenizer_load jpeg audio"
targets=${*:-$all}

if ! command -v clang >/dev/null; then
  echo "fuzz: clang is not installed (scripts/install-deps.sh installs it); no fuzzing done"
  exit 0
fi
if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined -Dbuildtype=debugoptimized \
    -Db_lundef=false >/dev/null
fi
build_targets=""
for t in $targets; do
  build_targets="$build_targets tests/fuzz/fuzz_$t"
done
# shellcheck disable=SC2086
ninja -C "$build" $build_targets >/dev/null

mkdir -p "$build/fuzz-crashes"
failed=""
for t in $targets; do
  mkdir -p "$build/fuzz-corpus/$t"
  log="$build/fuzz-$t.log"
  status=0
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-crashes/$t-" "$build/fuzz-corpus/$t" "tests/fuzz/corpus/$t" > "$log" 2>&1 \
    || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(ls "$build/fuzz-corpus/$t" | wc -l)
  if [ "$status" -ne 0 ]; then
    echo "fuzz $t: FAILED after ${runs:-?} executions (exit $status); see $log:"
    grep -E "ERROR|runtime error|invariant failed|Test unit written" "$log" | head -5
    failed="$failed $t"
  else
    echo "fuzz $t: ${runs:-?} executions in ${seconds} s, no crash (corpus: $corpus new inputs kept)"
  fi
done
if [ -n "$failed" ]; then
  echo "fuzz: crashes in:$failed"
  exit 1
fi
