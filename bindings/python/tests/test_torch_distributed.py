"""aepo.torch.distributed: local values without a process group, and a real two-process gloo
run (loopback, a free port, bounded time) against the one-process run on the whole batch."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import aepo

torch = pytest.importorskip("torch")
from aepo.torch import distributed as atd  # noqa: E402
import torch_dist_worker as worker  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 150  # seconds for the whole two-process run


def test_without_a_process_group_the_values_are_local():
    assert not atd.is_initialized() and atd.world_size() == 1
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    c = atd.global_counts(mask)
    assert c == (3, 2, 1) and c.loss_kwargs() == {"global_tokens": 3, "global_seqs": 2, "dp_size": 1}
    assert atd.global_counts([mask.bool(), np.ones((2, 5), np.uint8)]) == (13, 4, 1)  # micro-batches of any L
    assert atd.all_reduce_sums(2.5, 7) == (2.5, 7)
    assert atd.all_reduce_sums(torch.tensor(1.25, dtype=torch.float64), torch.tensor(4)) == (1.25, 4)
    assert atd.all_reduce_sums([1.0, 2.0], 3) == ((1.0, 2.0), 3)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, targets):
    """Runs the two ranks; returns their JSON results."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    procs, paths = [], []
    for rank in range(2):
        path = str(tmp_path / f"rank{rank}.json")
        paths.append(path)
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "torch_dist_worker.py"), str(rank), "2",
                                       str(port), path, json.dumps(targets)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + TIMEOUT
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            logs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the gloo run did not finish in {TIMEOUT} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log}"
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    return results


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


def test_two_gloo_ranks_match_one_process_on_the_whole_batch(tmp_path):
    modes = ("token-mean", "seq-mean-token-mean")
    # The one-process run on the concatenated batch, first with a provisional target to learn
    # the statistics, then with a target between them so that the decisions change over the run.
    probe = {m: worker.run(0, 1, m, 1.0) for m in modes}
    targets = {m: float(np.median(probe[m]["stats"])) + 1e-3 for m in modes}
    single = {m: worker.run(0, 1, m, targets[m]) for m in modes}
    ranks = launch(tmp_path, targets)

    for m in modes:
        one, r0, r1 = single[m], ranks[0][m], ranks[1][m]
        # Every rank's controller saw the same all-reduced statistic and decided the same.
        assert r0["decisions"] == r1["decisions"], m
        assert r0["stats"] == r1["stats"]
        temps = [d["temperature"] for d in r0["decisions"]]
        assert len(set(temps)) == 2, f"{m}: the run should cross the target, temperatures {temps}"
        for d, e in zip(r0["decisions"], one["decisions"]):
            assert (d["step"], d["temperature"], d["k_max"], d["halve"], d["reason"]) == \
                   (e["step"], e["temperature"], e["k_max"], e["halve"], e["reason"])
        assert rel(r0["stats"], one["stats"]) <= 1e-6
        assert min(abs(s - targets[m]) for s in one["stats"]) > 1e-4  # the decisions are not a coin toss
        # The loss: each rank's micro-batch sum is its share times dp_size; their mean is the loss.
        mean_loss = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"])]
        err = rel(mean_loss, one["losses"])
        print(f"{m}: loss rel diff {err:.2e}, statistic rel diff {rel(r0['stats'], one['stats']):.2e}, "
              f"gradient rel diff {max(rel(a, b) for a, b in zip(r0['first_grad'], one['first_grad'])):.2e}, "
              f"parameters rel diff {max(rel(a, b) for a, b in zip(r0['params'], one['params'])):.2e}, "
              f"temperatures {temps}")
        assert err <= 1e-6, f"{m}: loss rel diff {err:.3e}"
        # The gradient after DDP's averaging equals the one-process gradient.
        for g0, g1, g in zip(r0["first_grad"], r1["first_grad"], one["first_grad"]):
            assert g0 == g1
            err = rel(g0, g)
            assert err <= 1e-6, f"{m}: gradient rel diff {err:.3e}"
        for p0, p1, p in zip(r0["params"], r1["params"], one["params"]):
            assert p0 == p1 and rel(p0, p) <= 1e-5
    # Global counts and exact sums over the group.
    mask0 = worker.problem(0)[2]
    want = (int(mask0.sum()), int((mask0.sum(1) > 0).sum()), 2)
    assert tuple(ranks[0]["counts"].values()) == want and ranks[1]["counts"] == ranks[0]["counts"]
    assert ranks[0]["sums"] == ranks[1]["sums"] == [[0.1 + 0.2, 2.0 ** -39], 7]


def test_local_counts_would_give_a_different_loss():
    """Why the global counts matter: rank shards hold different token counts, so local
    token-means do not average to the global token-mean."""
    X, targets, mask, adv = worker.problem(0)
    halves = [mask[:4].sum().item(), mask[4:].sum().item()]
    assert halves[0] != halves[1]
    with aepo.Loss({"loss": {"loss_agg_mode": "token-mean"}}) as h:
        lp = np.full(mask.shape, -2.0, np.float32)
        olp = np.full(mask.shape, -2.1, np.float32)
        whole = h.compute(lp, olp, adv.numpy(), mask.numpy()).loss
        local = [h.compute(lp[s], olp[s], adv.numpy()[s], mask.numpy()[s]).loss for s in (slice(0, 4), slice(4, 8))]
        glob = [h.compute(lp[s], olp[s], adv.numpy()[s], mask.numpy()[s], global_tokens=int(mask.sum()),
                          dp_size=2).loss for s in (slice(0, 4), slice(4, 8))]
    assert abs(sum(glob) / 2 - whole) <= 1e-9 * abs(whole)
    assert abs(sum(local) / 2 - whole) > 1e-3 * abs(whole)
