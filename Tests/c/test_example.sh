#!/usr/bin/env bash
# Runs the C example trainer as `make test-example` builds it, and checks its runs.
#
# usage: Tests/c/test_example.sh BIN_DIR
#   BIN_DIR holds aepo_train (plain) and aepo_train.san (ASan/UBSan); runs go under it.
#
# For each default config (grpo, bang_bang, adaptive):
#   - a 200-step run of the plain build; Tests/c/check_example.py checks that it finished,
#     that entropy stayed finite, that every decision followed the controller's rule, and
#     the qualitative result (GRPO's entropy falls, AEPO holds its target);
#   - the same run under ASan/UBSan with leak detection, which must write the same
#     metrics byte for byte.
# Then two failing configs under the sanitizers: the program must report the failed call
# with its status name and the library's message, exit 1, and leak nothing.
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
configs=$here/bindings/c/examples
check=$here/Tests/c/check_example.py
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
steps=200

for run in grpo bang_bang adaptive; do
  rm -rf "$bin/$run" "$bin/$run.san"
  "$bin/aepo_train" "$configs/$run.json" $steps --log-every 0 --out "$bin/$run" > "$bin/$run.log"
  python3 "$check" "$bin/$run" $steps $run --claims
  "$bin/aepo_train.san" "$configs/$run.json" $steps --log-every 0 --out "$bin/$run.san" > "$bin/$run.san.log"
  cmp "$bin/$run/metrics.csv" "$bin/$run.san/metrics.csv" || {
    echo "test-example: the ASan/UBSan run of $run differs from the plain one"; exit 1; }
done

# A failure inside the loop (every buffer allocated) and one at config time.
expect_failure() {  # name, config text, text the error must contain
  local name=$1 text=$2 want=$3 rc=0
  printf '%s' "$text" > "$bin/$name.json"
  "$bin/aepo_train.san" "$bin/$name.json" 3 --log-every 0 > /dev/null 2> "$bin/$name.err" || rc=$?
  if [ $rc -ne 1 ] || ! grep -qF "$want" "$bin/$name.err" || grep -q Sanitizer "$bin/$name.err"; then
    echo "test-example: the $name config should fail with exit 1 and '$want', without sanitizer reports;"
    echo "  exit $rc, stderr:"; sed 's/^/  /' "$bin/$name.err"; exit 1
  fi
}
expect_failure kl '{"loss": {"kl_loss_coef": 0.1}}' \
  'aepo_fused_head_loss_and_grad failed with AEPO_ERR_INVALID_ARGUMENT (1): ref_logp'
expect_failure typo '{"controller": {"t_hgh": 1.2}}' \
  'aepo_config_normalize failed with AEPO_ERR_CONFIG (4): controller.t_hgh'
echo "test-example: the example trainer built with -Werror, ran, and passed under ASan/UBSan"
