#!/usr/bin/env bash
# Runs libFuzzer harnesses for a fixed time each, a few at a time.
#   scripts/fuzz.sh BIN_DIR SECONDS JOBS NAME...
# Each harness BIN_DIR/fuzz_NAME starts from the committed corpus (Tests/fuzz/corpus/NAME)
# and the crash regressions (Tests/fuzz/regressions/NAME), writes the inputs it finds to
# BIN_DIR/work/NAME and any crash to BIN_DIR/artifacts/NAME-*. Logs: BIN_DIR/logs/NAME.log.
# Exits non-zero when any harness found a crash, a leak or a timeout.
set -uo pipefail
bin=$1 secs=$2 jobs=$3
shift 3
mkdir -p "$bin/logs" "$bin/artifacts"

run_one() {
  local name=$1
  local args=(-max_total_time="$secs" -timeout=25 -rss_limit_mb=2560 -print_final_stats=1
              -artifact_prefix="$bin/artifacts/$name-")
  [ -f "Tests/fuzz/$name.dict" ] && args+=(-dict="Tests/fuzz/$name.dict")
  mkdir -p "$bin/work/$name"
  local dirs=("$bin/work/$name" "Tests/fuzz/corpus/$name")
  [ -d "Tests/fuzz/regressions/$name" ] && dirs+=("Tests/fuzz/regressions/$name")
  SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=1 "$bin/fuzz_$name" "${args[@]}" "${dirs[@]}" > "$bin/logs/$name.log" 2>&1
  echo $? > "$bin/logs/$name.rc"
}

start=$(date +%s)
running=0
for name in "$@"; do
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  run_one "$name" &
  running=$((running + 1))
done
wait

failed=0
for name in "$@"; do
  rc=$(cat "$bin/logs/$name.rc")
  log="$bin/logs/$name.log"
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
  if [ "$rc" -eq 0 ]; then
    printf 'fuzz %-10s ok    %9s runs in %s s, %s\n' "$name" "${runs:-?}" "$secs" "$cov"
  else
    failed=1
    printf 'fuzz %-10s FAILED (exit %s); log %s\n' "$name" "$rc" "$log"
    grep -E 'ERROR|invariant|SUMMARY|Test unit written' "$log" | head -20 | sed 's/^/    /'
  fi
done
echo "fuzz: $# harnesses, ${secs} s each, $jobs at a time, $(( $(date +%s) - start )) s in all"
exit $failed
