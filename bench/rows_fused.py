"""Fused LM head at N=2048, D=1024, V=32000 (see bench/fusedlib.py for the workload).

Four rows, each the median of interleaved runs:
- loss_and_grad against PyTorch CPU autograd of (X Wᵀ)/T plus the same loss, with the default
  chunks (chunk_n = 128) and with chunk_n = 512. OpenBLAS packs all of W again for every row
  block's products and updates all of dW, so 128-row blocks spend about 12-17% more time in
  the products than the three full-size products, 512-row blocks about 5%. The
  speed target asks for at most 1/8 of PyTorch's peak memory, which chunk_n = 512 (62.5 MiB
  of logits block, 1/16 of PyTorch's) keeps; the default keeps under 1/8 of N*V*4 bytes;
- loss_and_grad against the floor: the three full-size cblas_sgemm products of a linear
  head's forward and backward, on pre-touched buffers, through the OpenBLAS libaepo links;
- the separate forward, loss, backward sequence against the same floor.
Peak extra memory of each call is measured in a fresh child process (fusedlib.measure_memory).
Targets: loss_and_grad <= 1.25x the floor, the pair <= 1.6x, loss_and_grad >= 1.3x
faster than PyTorch with <= 1/8 of its peak memory, and a peak under N*V*4/8 bytes with the
default chunks.
"""
import statistics
import time

import fusedlib
from benchlib import Row

MiB = 1 << 20


class Timed:
    """A callable that also keeps its own durations, so a row can report lib / peer."""

    def __init__(self, fn):
        self.fn = fn
        self.times = []

    def __call__(self):
        t0 = time.perf_counter()
        self.fn()
        self.times.append(time.perf_counter() - t0)

    def median(self, skip):
        return statistics.median(self.times[skip:])


def paired(lib, peer, skip=1):
    """Median over the interleaved runs of peer_time / lib_time, each pair run back to back:
    steadier than the ratio of the medians when other jobs load the machine unevenly."""
    return round(statistics.median(p / l for l, p in zip(lib.times[skip:], peer.times[skip:])), 3)


LARGE_CHUNK_N = 512


def rows(ctx):
    state = {}
    threads = ctx.threads

    def workload():
        if "w" not in state:
            import numpy as np
            w = fusedlib.Workload(threads)
            w.torch_setup()
            lib = fusedlib.blas()
            Z = np.ones((fusedlib.N, fusedlib.V), np.float32)
            dX = np.ones((fusedlib.N, fusedlib.D), np.float32)
            dW = np.ones((fusedlib.V, fusedlib.D), np.float32)
            state["w"] = w
            state["floor"] = lambda: fusedlib.floor_products(lib, w.X, w.W, Z, dX, dW)
            # The library and PyTorch compute the same loss.
            a = w.loss_and_grad()[0]
            b = w.torch_loss_and_grad()
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"loss mismatch: libaepo {a}, torch {b}"
        return state["w"]

    def memory(mode, chunk_n=None):
        key = f"mem_{mode}_{chunk_n}"
        if key not in state:
            state[key] = fusedlib.measure_memory(mode, threads, chunk_n)["peak_extra_bytes"]
        return state[key]

    def large():
        if "large" not in state:
            state["large"] = workload().with_chunk_n(LARGE_CHUNK_N)
        return state["large"]

    lag_a = Timed(lambda: workload().loss_and_grad())
    torch_a = Timed(lambda: workload().torch_loss_and_grad())
    lag_t = Timed(lambda: large().loss_and_grad())
    torch_t = Timed(lambda: workload().torch_loss_and_grad())
    lag_b = Timed(lambda: workload().loss_and_grad())
    floor_b = Timed(lambda: (workload(), state["floor"]())[1])
    pair_c = Timed(lambda: workload().pair())
    floor_c = Timed(lambda: (workload(), state["floor"]())[1])
    nv4 = fusedlib.N * fusedlib.V * 4

    def extra_a():
        lib, peer = memory("loss_and_grad"), memory("torch")
        return {"loss_and_grad_peak_extra_MiB": round(lib / MiB, 1), "torch_peak_extra_MiB": round(peer / MiB, 1),
                "memory_ratio_torch_over_lib": round(peer / max(lib, 1), 1),
                "peak_over_NV4": round(lib / nv4, 4), "paired_speedup": paired(lag_a, torch_a),
                "targets": "peak_over_NV4 < 0.125 (default chunks)"}

    def extra_t():
        lib, peer = memory("loss_and_grad", LARGE_CHUNK_N), memory("torch")
        return {"loss_and_grad_peak_extra_MiB": round(lib / MiB, 1), "torch_peak_extra_MiB": round(peer / MiB, 1),
                "memory_ratio_torch_over_lib": round(peer / max(lib, 1), 1),
                "peak_over_NV4": round(lib / nv4, 4), "paired_speedup": paired(lag_t, torch_t),
                "targets": "speedup >= 1.3 with memory ratio >= 8"}

    def extra_b():
        return {"loss_and_grad_over_floor": round(lag_b.median(1) / floor_b.median(1), 3),
                "paired_over_floor": round(1 / paired(lag_b, floor_b), 3),
                "floor_peak_extra_MiB": round(memory("floor") / MiB, 1), "target": "loss_and_grad_over_floor <= 1.25"}

    def extra_c():
        return {"pair_over_floor": round(pair_c.median(1) / floor_c.median(1), 3),
                "paired_over_floor": round(1 / paired(pair_c, floor_c), 3),
                "pair_peak_extra_MiB": round(memory("pair") / MiB, 1), "target": "pair_over_floor <= 1.6"}

    shape = f"N={fusedlib.N} D={fusedlib.D} V={fusedlib.V}"
    return [
        Row(name=f"fused loss_and_grad {shape}", lib=lag_a, peer=torch_a,
            peer_name="PyTorch CPU autograd: (X@W.T)/T, log_softmax, same loss", extra=extra_a,
            notes_keys=("loss_and_grad_peak_extra_MiB", "torch_peak_extra_MiB", "memory_ratio_torch_over_lib",
                        "peak_over_NV4", "paired_speedup", "targets")),
        Row(name=f"fused loss_and_grad chunk_n={LARGE_CHUNK_N} {shape}", lib=lag_t, peer=torch_t,
            peer_name="PyTorch CPU autograd: (X@W.T)/T, log_softmax, same loss", extra=extra_t,
            notes_keys=("loss_and_grad_peak_extra_MiB", "torch_peak_extra_MiB", "memory_ratio_torch_over_lib",
                        "peak_over_NV4", "paired_speedup", "targets")),
        Row(name=f"fused loss_and_grad vs floor {shape}", lib=lag_b, peer=floor_b,
            peer_name="floor: 3 full-size cblas_sgemm, pre-touched buffers", extra=extra_b,
            notes_keys=("loss_and_grad_over_floor", "paired_over_floor", "floor_peak_extra_MiB", "target")),
        Row(name=f"fused forward+loss+backward vs floor {shape}", lib=pair_c, peer=floor_c,
            peer_name="floor: 3 full-size cblas_sgemm, pre-touched buffers", extra=extra_c,
            notes_keys=("pair_over_floor", "paired_over_floor", "pair_peak_extra_MiB", "target")),
    ]
