"""The C example trainer's adaptive run (target 1.0) on the library defaults beside the best
fixed-gain PI of a grid search, over five seeds (`--seed S --init-seed S+10`, S = 1..5).

The best PI is the grid point with the lowest mean second-half error over the seeds; a
seed's bound is max(0.03, 1.1 x that error). Needs `make example` first.

usage: python3 bench/example_gain_grid.py [STEPS] [JOBS]
"""
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("AEPO_TRAIN", os.path.join(HERE, "..", "build", "example", "aepo_train"))
KP = (1, 2, 4, 8)
KI = (0.125, 0.25, 0.5, 1)
EMA = (0.0, 0.5)
SEEDS = (1, 2, 3, 4, 5)


def run(config, seed, steps, tmp):
    path = os.path.join(tmp, f"cfg-{abs(hash(json.dumps(config, sort_keys=True)))}-{seed}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    out = subprocess.run([BIN, path, str(steps), "--seed", str(seed), "--init-seed", str(seed + 10), "--log-every", "0"],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"mean \|H - target\| over steps \d+\.\.\d+: ([0-9.]+)", out).group(1))


def main(argv):
    steps = int(argv[0]) if argv else 400
    jobs = int(argv[1]) if len(argv) > 1 else 2
    base = {"schema_version": 1, "controller": {"mode": "adaptive", "target": 1.0, "k_max": 128}}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as ex:
        auto = list(ex.map(lambda s: run(base, s, steps, tmp), SEEDS))
        grid = list(itertools.product(KP, KI, EMA))

        def fixed(g):
            kp, ki, ema = g
            cfg = json.loads(json.dumps(base))
            cfg["controller"]["adaptive"] = {"tuning": "fixed", "kp": kp, "ki": ki, "ema": ema}
            return [run(cfg, s, steps, tmp) for s in SEEDS]

        results = dict(zip(grid, ex.map(fixed, grid)))
    g_best, errs = min(results.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
    best = sum(errs) / len(errs)
    bound = max(0.03, 1.1 * best)
    ok = True
    print(f"best fixed PI {best:.4f} at kp/ki/ema {'/'.join(f'{x:g}' for x in g_best)}; bound {bound:.4f}")
    for s, e in zip(SEEDS, auto):
        ok &= e <= bound
        print(f"seed {s}: self-tuning {e:.4f}, best PI on this seed {results[g_best][SEEDS.index(s)]:.4f} "
              f"{'ok' if e <= bound else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
