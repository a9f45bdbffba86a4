#!/usr/bin/env bash
# The C example trainer's adaptive run (bindings/c/examples/adaptive.json, target 1.0) over
# five seeds: the second-half tracking error of each (docs/DEMO.md, README).
#
# usage: bench/example_seeds.sh [STEPS]    (after `make example`; default 400 steps)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/build/example/aepo_train
steps=${1:-400}
[ -x "$bin" ] || { echo "example_seeds: build the example first (make example)"; exit 1; }
for s in 1 2 3 4 5; do
  err=$("$bin" "$here/bindings/c/examples/adaptive.json" "$steps" --seed "$s" --init-seed $((s + 10)) --log-every 0 |
        sed -n 's/^summary: mean |H - target| over steps [0-9]*\.\.[0-9]*: \([0-9.]*\).*/\1/p')
  noise=$("$bin" "$here/bindings/c/examples/adaptive.json" "$steps" --seed "$s" --init-seed $((s + 10)) --log-every 0 |
          sed -n 's/.*statistic noise \([0-9.]*\) nats.*/\1/p')
  echo "seed $s (init-seed $((s + 10))): second-half error $err, statistic noise $noise"
done
