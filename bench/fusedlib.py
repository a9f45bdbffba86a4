#!/usr/bin/env python3
"""The fused-head benchmark workload, shared by bench/rows_fused.py and by the peak-memory
child processes it starts (``python bench/fusedlib.py memory --mode ...``).

Workload: N = 2048 tokens (B = 8 rows of L = 256), D = 1024, V = 32000, T = 1, no bias, every
token valid, the default loss config (vanilla PPO clip, token-mean). Old log-probs are the
current ones plus noise of 0.05, so some tokens are clipped.

Peak memory of a call is measured in a fresh process: inputs and outputs are allocated and
touched, BLAS is warmed with the three full-size products on temporary buffers, the peak
RSS is reset (``/proc/self/clear_refs`` = 5), the call runs once, and the result is VmHWM
after the call minus VmRSS before it. The child runs with glibc's mmap threshold fixed at
128 KiB, so every large scratch buffer is fresh memory and counted.
"""
import argparse
import copy
import ctypes
import json
import os
import re
import sys

N, D, V, B, L = 2048, 1024, 32000, 8, 256
T = 1.0
SEED = 20251009


def blas():
    """The OpenBLAS that libaepo links (the system libopenblas.so.0), with cblas_sgemm typed."""
    lib = ctypes.CDLL("libopenblas.so.0")
    f = lib.cblas_sgemm
    i = ctypes.c_int
    f.restype = None
    f.argtypes = [i, i, i, i, i, i, ctypes.c_float, ctypes.c_void_p, i, ctypes.c_void_p, i, ctypes.c_float,
                  ctypes.c_void_p, i]
    return lib


ROW, NT, TR = 101, 111, 112


def sgemm(lib, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    lib.cblas_sgemm(ROW, ta, tb, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta, c.ctypes.data, ldc)


def floor_products(lib, X, W, Z, dX, dW):
    """The three full-size products of a linear head's forward and backward."""
    sgemm(lib, NT, TR, N, V, D, X, D, W, D, 0.0, Z, V)    # Z = X Wᵀ
    sgemm(lib, NT, NT, N, D, V, Z, V, W, D, 0.0, dX, D)   # dX = Z W
    sgemm(lib, TR, NT, V, D, N, Z, V, X, D, 0.0, dW, D)   # dW = Zᵀ X


class Workload:
    def __init__(self, threads, chunk_n=None):
        import numpy as np
        import aepo
        self.np = np
        self.aepo = aepo
        rng = np.random.default_rng(SEED)
        self.X = rng.standard_normal((N, D), dtype=np.float32)
        self.W = (rng.standard_normal((V, D), dtype=np.float32) * 0.05).astype(np.float32)
        self.targets = rng.integers(0, V, N).astype(np.int32)
        self.mask = np.ones((B, L), np.uint8)
        self.advantages = rng.standard_normal(B).astype(np.float32)
        self.cfg = {"fused": {"threads": threads, "temperature": T}, "loss": {"threads": threads}}
        if chunk_n is not None:
            self.cfg["fused"]["chunk_n"] = chunk_n
        self.head = aepo.FusedHead(self.cfg)
        logp, _, _ = self.head.forward(self.X, self.W, self.targets)
        self.old_logp = (logp + rng.normal(0, 0.05, N).astype(np.float32)).reshape(B, L)
        self.loss = aepo.Loss(self.cfg)
        self.dW = np.zeros((V, D), np.float32)

    def with_chunk_n(self, chunk_n):
        """The same inputs and buffers, with a head of another chunk_n."""
        other = copy.copy(self)
        other.cfg = {**self.cfg, "fused": {**self.cfg["fused"], "chunk_n": chunk_n}}
        other.head = self.aepo.FusedHead(other.cfg)
        return other

    # -- libaepo -------------------------------------------------------------------------

    def loss_and_grad(self, out_dX=None):
        return self.head.loss_and_grad(self.X, self.W, self.targets, self.loss, self.old_logp, self.advantages,
                                       self.mask, grad_W=self.dW, out_dX=out_dX)

    def pair(self, out_dX=None):
        """forward, the loss on its log-probs and entropies, backward."""
        logp, ent, lse = self.head.forward(self.X, self.W, self.targets)
        r = self.loss.compute(logp.reshape(B, L), self.old_logp, self.advantages, self.mask,
                              entropy=ent.reshape(B, L))
        ge = None if r.grad_entropy is None else r.grad_entropy.reshape(N)
        self.head.backward(self.X, self.W, self.targets, lse, ent, r.grad.reshape(N), ge, grad_W=self.dW,
                           out_dX=out_dX)
        return r.loss

    # -- PyTorch -------------------------------------------------------------------------

    def torch_setup(self):
        import torch
        self.torch = torch
        self.Xt = torch.from_numpy(self.X.copy()).requires_grad_()
        self.Wt = torch.from_numpy(self.W.copy()).requires_grad_()
        self.tt = torch.from_numpy(self.targets).long()
        self.oldt = torch.from_numpy(self.old_logp.reshape(N))
        self.advt = torch.from_numpy(self.advantages).repeat_interleave(L)
        self.mt = torch.from_numpy(self.mask.reshape(N).astype(self.np.float32))

    def torch_loss_and_grad(self):
        """PyTorch CPU autograd of (X Wᵀ)/T, log-softmax, and verl's vanilla loss (token-mean)."""
        torch = self.torch
        self.Xt.grad = None
        self.Wt.grad = None
        logits = (self.Xt @ self.Wt.T) / T
        logp = torch.log_softmax(logits, dim=-1).gather(-1, self.tt[:, None]).squeeze(-1)
        d = (logp - self.oldt).clamp(-20, 20)
        r = d.exp()
        A = self.advt
        l1 = -A * r
        l2 = -A * r.clamp(1 - 0.2, 1 + 0.2)
        c1 = torch.maximum(l1, l2)
        c2 = torch.minimum(-A * 3.0, c1)
        tok = torch.where(A < 0, c2, c1)
        loss = (tok * self.mt).sum() / self.mt.sum()
        loss.backward()
        return loss.item()


# -- peak memory child ------------------------------------------------------------------

def _status():
    text = open("/proc/self/status").read()
    return {k: int(re.search(k + r":\s+(\d+) kB", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_child(mode, threads, chunk_n=None):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    import numpy as np
    if mode == "torch":
        import torch
        torch.set_num_threads(threads)
    w = Workload(threads, chunk_n)
    lib = blas()
    # Outputs, allocated and touched.
    Z = np.ones((N, V), np.float32) if mode == "floor" else None
    dX = np.ones((N, D), np.float32)
    w.dW.fill(0)
    # BLAS warm-up: the three full-size products on temporary buffers (freed before the
    # peak is reset), so every BLAS thread's packing buffers are resident.
    if mode == "torch":
        w.torch_setup()
        import torch
        with torch.no_grad():
            z = w.Xt @ w.Wt.T
            _ = z @ w.Wt
            _ = z.T @ w.Xt
        del z, _
    else:
        zt = np.empty((N, V), np.float32)
        dxt = np.empty((N, D), np.float32)
        dwt = np.empty((V, D), np.float32)
        floor_products(lib, w.X, w.W, zt, dxt, dwt)
        del zt, dxt, dwt
    call = {
        "floor": lambda: floor_products(lib, w.X, w.W, Z, dX, w.dW),
        "torch": w.torch_loss_and_grad,
        "loss_and_grad": lambda: w.loss_and_grad(out_dX=dX),
        "pair": lambda: w.pair(out_dX=dX),
    }[mode]
    _reset_peak()
    before = _status()
    call()
    after = _status()
    return {"mode": mode, "rss_before": before["VmRSS"], "hwm_after": after["VmHWM"],
            "peak_extra_bytes": after["VmHWM"] - before["VmRSS"]}


def measure_memory(mode, threads, chunk_n=None):
    """Runs one memory child and returns its result dict."""
    import subprocess
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    # A fixed mmap threshold: every allocation above 128 KiB gets fresh pages and returns them
    # when freed, so the peak counts all scratch a call touches, whatever the allocator did
    # with earlier frees (with glibc's sliding threshold a block could reuse resident heap).
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    extra = [] if chunk_n is None else ["--chunk-n", str(chunk_n)]
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "memory", "--mode", mode,
                          "--threads", str(threads)] + extra, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["memory"])
    ap.add_argument("--mode", required=True, choices=["floor", "torch", "loss_and_grad", "pair"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-n", type=int, default=None)
    a = ap.parse_args()
    print(json.dumps(memory_child(a.mode, a.threads, a.chunk_n)))
