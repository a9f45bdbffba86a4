"""CSV, summary table, plots and the progress bar of the demo."""
import csv
import math
import os
import sys
import time

import numpy as np

COLUMNS = ["run", "mode", "step", "target", "statistic", "nll_all", "nll_main", "entropy_exact", "reward",
           "temperature", "k", "n_positive", "loss", "est_gain", "est_same_step", "est_delay",
           "est_measurement_noise"]


def _fmt(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def write_csv(path, results):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for res in results:
            for row in res.rows:
                w.writerow([_fmt(row[c]) for c in COLUMNS])


def summarize(results, evals, ks):
    out = []
    for res, (passk, distinct) in zip(results, evals):
        stat = np.array([r["statistic"] for r in res.rows])
        exact = np.array([r["entropy_exact"] for r in res.rows])
        tail = max(1, min(10, len(stat)))
        half = len(stat) // 2
        row = {
            "run": res.spec.name,
            "mode": res.spec.mode,
            "target": res.spec.target if not math.isnan(res.spec.target) else None,
            "start_entropy": float(stat[0]),
            "final_statistic": float(stat[-tail:].mean()),
            "final_entropy_exact": float(exact[-tail:].mean()),
            "tracking_mae": (float(np.abs(stat[half:] - res.spec.target).mean())
                             if not math.isnan(res.spec.target) else None),
            "final_reward": float(np.mean([r["reward"] for r in res.rows[-tail:]])),
            "statistic_noise": (float(res.rows[-1]["est_measurement_noise"])
                                if not math.isnan(res.rows[-1]["est_measurement_noise"]) else None),
            "pass_at_k": {str(k): v for k, v in passk.items()},
            "distinct_correct": distinct,
        }
        out.append(row)
    return out


def print_table(summary, ks):
    kmax = max(k for k in ks)
    head = (f"{'run':16} {'H start':>8} {'H final':>8} {'exact H':>8} {'|H-H*| 2nd half':>16} "
            f"{'reward':>7} {'pass@1':>7} {f'pass@{kmax}':>8} {'distinct correct':>17}")
    print()
    print(head)
    print("-" * len(head))
    for r in summary:
        mae = f"{r['tracking_mae']:.3f}" if r["tracking_mae"] is not None else "-"
        print(f"{r['run']:16} {r['start_entropy']:8.3f} {r['final_statistic']:8.3f} {r['final_entropy_exact']:8.3f} "
              f"{mae:>16} {r['final_reward']:7.3f} {r['pass_at_k']['1']:7.3f} {r['pass_at_k'][str(kmax)]:8.3f} "
              f"{r['distinct_correct']:17d}")
    print("H: the statistic the controller is fed (token NLL of the update batch at T = 1, over the rows "
          "controller.statistic_rows picks), mean of the last 10 steps; "
          "exact H: full-vocabulary entropy of the on-policy batch.\n"
          "reward: training reward, last 10 steps. pass@k: unbiased, at T = 1, on sums never trained on. "
          "distinct correct: different correct answers among the evaluation samples of every sum.")


def plot(outdir, results, evals, ks, targets):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("bang_bang", "adaptive") if any(r.spec.mode == m for r in results)]
    grpo = [r for r in results if r.spec.mode == "grpo"]
    colors = plt.get_cmap("viridis")
    ncol = max(1, len(modes))
    fig, axes = plt.subplots(1, ncol, figsize=(6.5 * ncol, 4.4), sharey=True, squeeze=False)
    titles = {"bang_bang": "AEPO bang-bang (T 1.2 / 0.8)", "adaptive": "AEPO adaptive (PI on temperature)"}
    for ax, mode in zip(axes[0], modes or ["grpo"]):
        for g in grpo:
            ax.plot([r["statistic"] for r in g.rows], color="0.45", lw=1.6, label="GRPO")
        runs = [r for r in results if r.spec.mode == mode]
        for i, res in enumerate(runs):
            c = colors(0.15 + 0.7 * i / max(1, len(runs) - 1))
            ax.plot([r["statistic"] for r in res.rows], color=c, lw=1.4, label=f"H* = {res.spec.target:g}")
            ax.plot([r["entropy_exact"] for r in res.rows], color=c, lw=0.8, ls=":", alpha=0.9)
            ax.axhline(res.spec.target, color=c, lw=1.0, ls="--", alpha=0.8)
        ax.set_title(titles.get(mode, "GRPO"))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[0][0].set_ylabel("entropy (nats/token): statistic solid, exact dotted")
    fig.suptitle("Entropy held at chosen targets (dashed) while GRPO collapses", fontsize=11)
    fig.tight_layout()
    p1 = os.path.join(outdir, "entropy.png")
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for res, (passk, _) in zip(results, evals):
        ls = "--" if res.spec.mode == "bang_bang" else "-"
        if res.spec.mode == "grpo":
            color = "0.3"
        else:  # the same colour per target as in entropy.png
            runs = [r for r in results if r.spec.mode == res.spec.mode]
            i = runs.index(res)
            color = colors(0.15 + 0.7 * i / max(1, len(runs) - 1))
        ax.plot(list(passk.keys()), list(passk.values()), marker="o", ms=3, ls=ls, color=color, label=res.spec.name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k on held-out sums (unbiased, T = 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("pass@k after training")
    fig.tight_layout()
    p2 = os.path.join(outdir, "pass_at_k.png")
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


class Progress:
    def __init__(self, total, enabled=True, width=32):
        self.total, self.enabled, self.width = total, enabled and total > 0, width
        self.label = ""
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, done):
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < 0.1:
            return
        self.last = now
        frac = done / self.total
        fill = int(frac * self.width)
        eta = (now - self.t0) / max(frac, 1e-9) * (1 - frac)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (self.width - fill)}] {100 * frac:5.1f}%  {self.label:16} "
                         f"eta {eta:5.1f} s ")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
