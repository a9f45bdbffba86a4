"""A small data-parallel training run for test_torch_distributed.py.

``run(rank, world, ...)`` trains a linear policy head for a few steps with
aepo.torch.logits_stats + aepo.torch.policy_loss, two micro-batches per rank, global counts
from aepo.torch.distributed, DDP gradient averaging, and an aepo.Controller fed the
all-reduced NLL. With world = 1 it is the one-process run on the whole batch. As a script
(``python torch_dist_worker.py RANK WORLD PORT OUT TARGETS``, TARGETS a JSON dict of the
controller target per loss mode) it joins a gloo group on
127.0.0.1 and writes what it saw to OUT as JSON.
"""
import json
import os
import sys
from datetime import timedelta

import torch

import aepo
import aepo.torch as at
from aepo.torch import distributed as atd

B, L, D, V = 8, 6, 5, 11
STEPS = 4
EPOCHS = 2          # inner updates per step, so the second one sees a ratio != 1
MICRO = 2           # micro-batches per rank
LR = 0.5


def problem(step):
    """The whole batch of one step, the same on every rank."""
    g = torch.Generator().manual_seed(1000 + step)
    X = torch.randn(B, L, D, generator=g)
    targets = torch.randint(0, V, (B, L), generator=g)
    lengths = torch.tensor([6, 1, 4, 6, 2, 5, 3, 6])  # uneven: rank shards hold different token counts
    mask = torch.arange(L)[None, :] < lengths[:, None]
    adv = torch.rand(B, generator=g) * 2 - 1
    return X, targets, mask, adv


def initial_model():
    torch.manual_seed(7)
    return torch.nn.Linear(D, V)


def loss_config(mode):
    return {"loss": {"loss_agg_mode": mode, "clip_ratio_high": 0.28, "entropy_coeff": 0.01}}


def run(rank, world, mode, target):
    model = initial_model()
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    ctl = aepo.Controller({"controller": {"target": target}})
    cfg = loss_config(mode)
    shard = slice(rank * B // world, (rank + 1) * B // world)
    out = {"losses": [], "stats": [], "decisions": [ctl.decision()._asdict()], "first_grad": None}
    for step in range(STEPS):
        X, targets, mask, adv = (t[shard] for t in problem(step))
        with torch.no_grad():
            old_logp = at.logits_stats(model(X), targets, 1.0, mask=mask).logp
        counts = atd.global_counts(mask)   # the mini-batch over every rank
        micro = torch.arange(X.shape[0]).chunk(MICRO)
        for epoch in range(EPOCHS):
            opt.zero_grad()
            loss_sum, nll_sum, count = 0.0, 0.0, 0
            for i, rows in enumerate(micro):
                last = i == len(micro) - 1
                ctx = net.no_sync() if world > 1 and not last else _null()
                with ctx:
                    s = at.logits_stats(net(X[rows]), targets[rows], 1.0, mask=mask[rows])
                    loss = at.policy_loss(s.logp, old_logp[rows], adv[rows], mask[rows], config=cfg,
                                          entropy=s.entropy, **counts.loss_kwargs())
                    loss.backward()
                loss_sum += loss.item()
                nll_sum += s.nll_sum
                count += s.count
            if step == 0 and epoch == 0:
                out["first_grad"] = [p.grad.tolist() for p in model.parameters()]
            opt.step()
            if epoch == 0:
                out["losses"].append(loss_sum)
                total, n = atd.all_reduce_sums(nll_sum, count)
                out["stats"].append(total / n)
                out["decisions"].append(ctl.step(nll_sum=total, count=n, step=step)._asdict())
    out["params"] = [p.detach().tolist() for p in model.parameters()]
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(rank, world, port, path, entropy_targets):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world, timeout=timedelta(seconds=60))
    try:
        result = {mode: run(rank, world, mode, target) for mode, target in entropy_targets.items()}
        result["counts"] = atd.global_counts(problem(0)[2][rank * B // world:(rank + 1) * B // world])._asdict()
        result["sums"] = atd.all_reduce_sums([0.1 * (rank + 1), 2.0 ** -40], 3 + rank)
        with open(path, "w") as f:
            json.dump(result, f)
        torch.distributed.barrier()  # no rank tears down while another still talks to it
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5]))
    # Everything is written and the group is destroyed. Skip the interpreter's finalisation:
    # in one of about fifteen runs, one rank aborted there ("terminate called without an
    # active exception", from the C++ side of torch.distributed) after it had written its
    # results.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
