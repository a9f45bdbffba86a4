"""cblas_sgemm of the system OpenBLAS under each core it can be told to use, against torch.mm
in the same processes: the measurement behind docs/FUSED.md, "The BLAS core".

    make bench-blas-cores        (or: python bench/blas_cores.py [--rounds 2])

OpenBLAS picks its core when it is loaded, so each core runs in its own process with
OPENBLAS_CORETYPE set (and one with nothing set, the core OpenBLAS picks itself). The shape
is one row block of the fused head: 512 x 1024 hidden states against a 32000 x 1024 weight,
2 threads, median of 5 after a warm-up.
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import ctypes, json, statistics, sys, time
import numpy as np
lib = ctypes.CDLL("libopenblas.so.0")
lib.openblas_get_corename.restype = ctypes.c_char_p
lib.openblas_set_num_threads(2)
M, K, N = 512, 1024, 32000
rng = np.random.default_rng(0)
a = rng.random((M, K), dtype=np.float32); b = rng.random((N, K), dtype=np.float32)
c = np.zeros((M, N), np.float32)
P = ctypes.POINTER(ctypes.c_float)
def sgemm():
    lib.cblas_sgemm(101, 111, 112, M, N, K, ctypes.c_float(1), a.ctypes.data_as(P), K, b.ctypes.data_as(P), K,
                    ctypes.c_float(0), c.ctypes.data_as(P), N)
def median_s(fn):
    fn()
    ts = []
    for _ in range(5):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)
out = {"core": lib.openblas_get_corename().decode(), "sgemm_s": median_s(sgemm)}
if sys.argv[1] == "torch":
    import torch
    torch.set_num_threads(2)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["torch_s"] = median_s(lambda: torch.mm(ta, tb.T))
print(json.dumps(out))
"""

CORES = [None, "Haswell", "SkylakeX"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    flop = 2 * 512 * 1024 * 32000
    print(f"{'OPENBLAS_CORETYPE':18} {'core':10} {'GFLOP/s':>8} {'vs default':>10} {'torch.mm GFLOP/s':>17}")
    for r in range(args.rounds):
        base = None
        for core in CORES:
            env = dict(os.environ)
            env.pop("OPENBLAS_CORETYPE", None)
            if core:
                env["OPENBLAS_CORETYPE"] = core
            p = subprocess.run([sys.executable, "-c", CHILD, "torch" if core == "SkylakeX" else "-"],
                               env=env, capture_output=True, text=True, check=True)
            res = json.loads(p.stdout)
            g = flop / res["sgemm_s"] / 1e9
            base = base or g
            tg = f"{flop / res['torch_s'] / 1e9:17.0f}" if "torch_s" in res else f"{'':17}"
            print(f"{core or '(unset)':18} {res['core']:10} {g:8.0f} {g / base:9.2f}x {tg}", flush=True)
        if r + 1 < args.rounds:
            print()


if __name__ == "__main__":
    main()
