#!/usr/bin/env python3
"""How fused.chunk_n sets the speed of loss_and_grad (not part of `make bench`; run it with
`make bench-chunks` or `python bench/fused_chunk_sweep.py 128 256 512`).

For each chunk_n it times, interleaved with the floor and PyTorch (the peers of
bench/rows_fused.py, same workload and threads):
- ``products``: the three products alone, made the way loss_and_grad makes them (chunk_n-row
  blocks: Z = X_b Wᵀ, dX_b = Z W, dW += Zᵀ X_b), so what the blocking costs in BLAS time is
  seen apart from the library's own passes;
- ``loss_and_grad``: the library call with that chunk_n;
and prints each median over the floor's median, PyTorch's median over loss_and_grad's (the
median of per-round ratios), and the logits block in MiB.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fusedlib as F  # noqa: E402


def block_products(lib, X, W, dX, dW, chunk_n):
    import numpy as np
    z = np.ones((chunk_n, F.V), np.float32)

    def run():
        for r0 in range(0, F.N, chunk_n):
            m = min(chunk_n, F.N - r0)
            xb = X[r0:r0 + m]
            F.sgemm(lib, F.NT, F.TR, m, F.V, F.D, xb, F.D, W, F.D, 0.0, z, F.V)
            F.sgemm(lib, F.NT, F.NT, m, F.D, F.V, z, F.V, W, F.D, 0.0, dX[r0:], F.D)
            F.sgemm(lib, F.TR, F.NT, F.V, F.D, m, z, F.V, xb, F.D, 1.0, dW, F.D)
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chunk_n", type=int, nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(a.threads):
        os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
        os.execv(sys.executable, [sys.executable] + sys.argv)
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    lib = F.blas()
    w = F.Workload(a.threads)
    w.torch_setup()
    Z = np.ones((F.N, F.V), np.float32)
    dX = np.ones((F.N, F.D), np.float32)
    dW = np.ones((F.V, F.D), np.float32)
    calls = {"floor": lambda: F.floor_products(lib, w.X, w.W, Z, dX, dW), "torch": w.torch_loss_and_grad}
    for c in a.chunk_n:
        calls[("products", c)] = block_products(lib, w.X, w.W, dX, dW, c)
        calls[("loss_and_grad", c)] = w.with_chunk_n(c).loss_and_grad
    times = {k: [] for k in calls}
    for f in calls.values():
        f()
    for _ in range(a.rounds):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    floor = statistics.median(times["floor"])
    torch_t = times["torch"]
    print(f"N={F.N} D={F.D} V={F.V}, {a.threads} threads, medians of {a.rounds} interleaved rounds; "
          f"floor {floor:.3f} s, PyTorch / floor {statistics.median(torch_t) / floor:.3f}")
    print(f"{'chunk_n':>8} {'block MiB':>10} {'products/floor':>15} {'loss_and_grad/floor':>20} {'PyTorch/loss_and_grad':>22}")
    for c in a.chunk_n:
        prod = statistics.median(times[("products", c)]) / floor
        lag_t = times[("loss_and_grad", c)]
        lag = statistics.median(lag_t) / floor
        speedup = statistics.median(p / l for p, l in zip(torch_t, lag_t))
        print(f"{c:>8} {c * F.V * 4 / 2**20:>10.1f} {prod:>15.3f} {lag:>20.3f} {speedup:>22.3f}")


if __name__ == "__main__":
    main()
