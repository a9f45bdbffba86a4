#!/usr/bin/env python3
"""libaepo benchmark harness: `make bench`.

Each row times a library call and its peer (numpy or PyTorch on the CPU, with the same
thread count) in the same process, interleaved (lib, peer, lib, peer, ...), after a warm-up,
for at least 5 runs each, and reports both medians and their ratio. Rows live in
bench/rows_*.py; each module defines ``rows(ctx)`` returning a list of ``Row``.

Absolute times on a shared 2-core machine are noise; the ratio against the peer, measured in
the same run, is the number to read.
"""
import argparse
import ctypes
import glob
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from benchlib import Row, BenchContext  # noqa: E402


def time_once(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def measure(row, runs, max_runs):
    """Interleaved lib / peer timings: `runs` pairs, then more (up to `max_runs`) while the
    per-pair ratio peer/lib spreads more than 10% around its median, so stable rows stop
    early and noisy ones get the repeats. The spread is reported with the result."""
    if row.setup:
        row.setup()
    for _ in range(row.warmup):
        row.lib()
        if row.peer:
            row.peer()
    lib_t, peer_t = [], []

    def spread():
        if not row.peer:
            m = statistics.median(lib_t)
            return (max(lib_t) - min(lib_t)) / m if m > 0 else 0.0
        ratios = [p / l for p, l in zip(peer_t, lib_t) if l > 0]
        m = statistics.median(ratios)
        return (max(ratios) - min(ratios)) / m if m > 0 else 0.0

    while len(lib_t) < max(runs, 1) or (len(lib_t) < max_runs and spread() > 0.10):
        lib_t.append(time_once(row.lib, row.inner))
        if row.peer:
            peer_t.append(time_once(row.peer, row.inner))
    res = {
        "name": row.name,
        "peer_name": row.peer_name,
        "runs": len(lib_t),
        "inner": row.inner,
        "lib_median_s": statistics.median(lib_t),
        "lib_runs_s": lib_t,
        "spread": spread(),
    }
    if row.peer:
        res["peer_median_s"] = statistics.median(peer_t)
        res["peer_runs_s"] = peer_t
        res["speedup"] = res["peer_median_s"] / res["lib_median_s"]
    res.update(row.extra() if callable(row.extra) else (row.extra or {}))
    if row.teardown:
        row.teardown()
    return res


def fmt_time(s):
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs per row at least")
    ap.add_argument("--max-runs", type=int, default=7, help="at most, while the ratio spreads more than 10%%")
    ap.add_argument("--only", default="", help="substring filter on row names")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = ap.parse_args()

    ctx = BenchContext(threads=args.threads)
    rows = []
    for path in sorted(glob.glob(os.path.join(HERE, "rows_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for r in mod.rows(ctx):
            if args.only in r.name:
                rows.append(r)

    info = ctx.aepo.runtime_info()
    blas = info["blas"]
    print(f"runtime: {info['cpu']['brand'] or info['cpu']['vendor']} ({info['cpu']['level']}); kernels "
          + ", ".join(f"{k} {v}" for k, v in info["kernels"].items())
          + f"; BLAS {os.path.basename(blas['library'])} core {blas['core'] or '?'} ({blas['core_level'] or '?'}), "
          + f"{blas['threads']} threads" + (f"; OPENBLAS_CORETYPE set by aepo to {info['python']['set_by_aepo']}"
                                             if info["python"]["set_by_aepo"] else ""))
    for w in info["warnings"]:
        print(f"warning: {w}")
    print(f"libaepo {ctx.aepo.__version__} bench: threads={ctx.threads} (library, torch and BLAS), "
          f"BLAS threads={ctx.blas_threads()}, torch={ctx.torch_version or 'not installed'}, "
          f"numpy={ctx.np.__version__}, {platform.processor() or platform.machine()}")
    results = []
    header = f"{'row':58} {'libaepo':>11} {'peer':>11} {'peer/lib':>9} {'spread':>7} {'runs':>4}  peer"
    print(header)
    print("-" * len(header))
    for r in rows:
        res = measure(r, args.runs, max(args.max_runs, args.runs))
        results.append(res)
        peer = fmt_time(res["peer_median_s"]) if "peer_median_s" in res else "-"
        ratio = f"{res['speedup']:.2f}x" if "speedup" in res else "-"
        print(f"{r.name:58} {fmt_time(res['lib_median_s']):>11} {peer:>11} {ratio:>9} "
              f"{res['spread'] * 100:>6.0f}% {res['runs']:>4}  {r.peer_name}", flush=True)
        for k in r.notes_keys:
            if k in res:
                print(f"{'':60}{k} = {res[k]}")
    meta = {"threads": ctx.threads, "blas_threads": ctx.blas_threads(), "torch": ctx.torch_version,
            "numpy": ctx.np.__version__, "version": ctx.aepo.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "runtime_info": info}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": results}, f, indent=2)
    print(f"\nmedians of {args.runs}-{max(args.max_runs, args.runs)} interleaved runs (more while the ratio's spread, "
          f"(max - min) / median over the runs, is above 10%); written to {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
