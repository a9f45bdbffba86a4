"""`make demo` / `python -m aepo.demo`: GRPO against AEPO (bang-bang and adaptive) on the
digit-sum task, with a CSV, two plots and a summary table in out/demo/."""
import argparse
import json
import os
import sys
import time

import numpy as np

import aepo

from . import report
from .runner import Hyper, RunSpec, evaluate, train
from .task import DigitSumTask

DEFAULT_TARGETS = (0.7, 1.0, 1.3)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m aepo.demo", description=__doc__)
    ap.add_argument("--steps", type=int, default=Hyper.steps, help="training steps per run (default %(default)s)")
    ap.add_argument("--targets", default=",".join(str(t) for t in DEFAULT_TARGETS),
                    help="comma-separated entropy targets in nats (default %(default)s)")
    ap.add_argument("--modes", default="grpo,bang_bang,adaptive",
                    help="comma-separated runs among grpo, bang_bang, adaptive (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed for prompts and the sampler (default 0)")
    ap.add_argument("--config", help="a JSON config file; its keys override the demo's base config")
    ap.add_argument("--length", type=int, default=6, help="digits per answer (default 6)")
    ap.add_argument("--prompts", default="15:39", help="range of target sums lo:hi (default 15:39)")
    ap.add_argument("--batch", type=int, default=Hyper.prompts_per_step, help="prompts per step (default %(default)s)")
    ap.add_argument("--n", type=int, default=Hyper.samples_per_prompt, help="rollouts per prompt (default %(default)s)")
    ap.add_argument("--combine", choices=["replace", "weighted"], default="replace",
                    help="how regulariser samples join the batch (default replace)")
    ap.add_argument("--eval-samples", type=int, default=Hyper.eval_samples,
                    help="samples per prompt for pass@k (default %(default)s)")
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def base_config(path):
    """The demo's base config: library defaults plus the demo's regulariser budget.

    k_max = 128 lets up to half of the 256 rollouts of a step be regulariser samples, which
    gives the controller authority on this small task (the reference code's 60 of 2560 does
    not). The adaptive controller runs on its defaults: it identifies this loop itself.
    """
    cfg = {"controller": {"k_max": 128}}
    if path:
        with open(path) as f:
            user = json.load(f)
        for section, values in user.items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section].update(values)
            else:
                cfg[section] = values
    aepo.validate_config(cfg)  # fail early, naming the path
    return cfg


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    lo, hi = (int(x) for x in args.prompts.split(":"))
    task = DigitSumTask(length=args.length, lo=lo, hi=hi)
    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("grpo", "bang_bang", "adaptive"):
            raise SystemExit(f"--modes: unknown run '{m}'")
    hyper = Hyper(steps=args.steps, prompts_per_step=args.batch, samples_per_prompt=args.n, seed=args.seed,
                  combine=args.combine, eval_samples=args.eval_samples)
    cfg = base_config(args.config)
    specs = []
    if "grpo" in modes:
        specs.append(RunSpec("grpo", "grpo"))
    for m in ("bang_bang", "adaptive"):
        if m in modes:
            specs += [RunSpec(f"{m}@{t:g}", m, t) for t in targets]

    print(f"libaepo {aepo.__version__}: {len(specs)} runs x {hyper.steps} steps on the digit-sum task "
          f"(L={task.length}, sums {lo}..{hi}, {hyper.prompts_per_step}x{hyper.samples_per_prompt} rollouts/step, "
          f"combine={hyper.combine})")
    os.makedirs(args.out, exist_ok=True)
    bar = report.Progress(total=len(specs) * hyper.steps, enabled=not args.quiet)
    results, evals = [], []
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= hyper.eval_samples]
    for i, spec in enumerate(specs):
        bar.label = spec.name
        res = train(task, spec, cfg, hyper, progress=lambda s, i=i: bar.update(i * hyper.steps + s))
        results.append(res)
        evals.append(evaluate(task, res, cfg, hyper, ks))
    bar.close()

    csv_path = os.path.join(args.out, "metrics.csv")
    report.write_csv(csv_path, results)
    summary = report.summarize(results, evals, ks)
    report.print_table(summary, ks)
    paths = [csv_path]
    if not args.no_plots:
        paths += report.plot(args.out, results, evals, ks, targets)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    paths.append(os.path.join(args.out, "summary.json"))
    print("wrote " + ", ".join(paths))
    print(f"run time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
