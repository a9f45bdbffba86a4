"""Global counts and sums over a ``torch.distributed`` process group.

With data parallelism every rank holds part of the mini-batch. Two things must then be
global for the result to equal a one-process run on the whole batch:

- the loss normalisers: ``global_counts(mask)`` gives the valid-token and non-empty-sequence
  counts of the whole mini-batch and the group size, to pass to every micro-batch's loss
  call (``**counts.loss_kwargs()``). Each rank's loss is then its exact share times
  ``dp_size``, and DDP's gradient mean over ranks gives the global-batch gradient;
- the controller's statistic: ``all_reduce_sums(nll_sum, count)`` gives the entropy or NLL
  sum and token count over all ranks, so every rank's controller sees the same number and
  takes the same decision.

Both gather the per-rank values and add them up in rank order, in float64 (sums) or exact
integers (counts), so every rank gets bit-identical results whatever the backend's
reduction order. Without an initialised process group they return the local values and
``dp_size`` 1. Both are collectives: every rank of the group must call them, in the same order.
"""
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from ..errors import DTypeError, InvalidValueError, NonFiniteError, ShapeError
from ._tensors import common_device, scalar

__all__ = ["GlobalCounts", "global_counts", "all_reduce_sums", "is_initialized", "world_size"]

_CPU = torch.device("cpu")
_EXACT = 1 << 53  # counts sent as float64 must stay exact


class GlobalCounts(NamedTuple):
    """Counts over the process group."""

    tokens: int   # valid tokens (mask = 1)
    seqs: int     # sequences with at least one valid token
    dp_size: int  # ranks in the group (1 without torch.distributed)

    def loss_kwargs(self):
        """``global_tokens``, ``global_seqs`` and ``dp_size`` for ``policy_loss`` /
        ``aepo.Loss.compute``."""
        return {"global_tokens": self.tokens, "global_seqs": self.seqs, "dp_size": self.dp_size}


def is_initialized():
    """True when torch.distributed is available and its default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world_size(group=None):
    """Ranks in ``group`` (the default group when None), or 1 without torch.distributed."""
    return dist.get_world_size(group) if is_initialized() else 1


def _comm_device(group, hint):
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    if backend in ("gloo", "mpi"):
        return _CPU
    return hint


def _gather(values, dtype, group, hint=_CPU):
    """Every rank's ``values`` (a list of numbers), as a list per rank in rank order."""
    device = _comm_device(group, hint)
    mine = torch.tensor(values, dtype=dtype, device=device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, mine, group=group)
    return [t.cpu().tolist() for t in every]


def _local_counts(mask, name):
    if isinstance(mask, torch.Tensor):
        common_device((name, mask))
        if mask.is_floating_point() or mask.is_complex():
            raise DTypeError(f"{name}: expected a bool or integer mask, got {mask.dtype}", argument=name)
        m = mask.detach()
        if m.dim() != 2:
            raise ShapeError(f"{name}: expected [B, L], got shape {tuple(m.shape)}", argument=name)
        if m.dtype != torch.bool:
            bad = (m != 0) & (m != 1)
            if bool(bad.any()):
                i = int(bad.flatten().nonzero()[0])
                raise InvalidValueError(f"{name}: {name}[{i}] = {int(m.flatten()[i])}; expected 0 or 1", argument=name,
                                        index=i)
            m = m != 0
        per_row = m.sum(dim=1)
        return int(per_row.sum()), int((per_row > 0).sum()), m.device
    a = np.asarray(mask)
    if a.dtype.kind not in "biu":
        raise DTypeError(f"{name}: expected a bool or integer mask, got dtype {a.dtype}", argument=name)
    if a.ndim != 2:
        raise ShapeError(f"{name}: expected [B, L], got shape {a.shape}", argument=name)
    bad = (a != 0) & (a != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidValueError(f"{name}: {name}[{i}] = {a.flat[i]}; expected 0 or 1", argument=name, index=i)
    per_row = (a != 0).sum(axis=1)
    return int(per_row.sum()), int((per_row > 0).sum()), _CPU


def global_counts(mask, group=None) -> GlobalCounts:
    """Valid-token and non-empty-sequence counts of the mini-batch over the group.

    ``mask`` is this rank's [B, L] response mask (bool or 0/1 integers; a tensor or an
    array), or a list of them (the rank's micro-batches, which may differ in L). Without
    an initialised process group the local counts are returned with dp_size 1.
    """
    masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
    tokens = seqs = 0
    hint = _CPU
    for i, m in enumerate(masks):
        t, s, hint = _local_counts(m, "mask" if len(masks) == 1 and not isinstance(mask, (list, tuple))
                                   else f"mask[{i}]")
        tokens += t
        seqs += s
    if not is_initialized():
        return GlobalCounts(tokens, seqs, 1)
    every = _gather([tokens, seqs], torch.int64, group, hint)
    return GlobalCounts(sum(r[0] for r in every), sum(r[1] for r in every), dist.get_world_size(group))


def all_reduce_sums(sum, count, group=None):  # noqa: A002  (the name docs/API.md gives it)
    """``(sum over ranks of sum, sum over ranks of count)`` as ``(float, int)``.

    ``sum`` is a float (an entropy or NLL sum, such as ``LogitsStats.nll_sum``, or a loss
    metric times its count, such as ``nll_main * n_tokens_main`` summed over micro-batches) or
    a sequence of floats (several sums over the same tokens, gathered in one collective; a
    tuple of floats is then returned); ``count`` is the number of tokens they cover. The
    statistic for ``aepo.Controller.step(nll_sum=..., count=...)`` is their ratio. Every
    rank receives the same bits.
    """
    many = isinstance(sum, (list, tuple))
    sums = [scalar(v, f"sum[{i}]" if many else "sum", float) for i, v in enumerate(sum if many else [sum])]
    for i, v in enumerate(sums):
        if not math.isfinite(v):
            name = f"sum[{i}]" if many else "sum"
            raise NonFiniteError(f"{name}: must be finite, got {v}", argument=name)
    n = scalar(count, "count", int)
    if n < 0:
        raise InvalidValueError(f"count: must be >= 0, got {n}", argument="count")
    if not is_initialized():
        total, total_n = sums, n
    else:
        if n >= _EXACT:
            raise InvalidValueError(f"count: {n} is too large to all-reduce exactly", argument="count")
        every = _gather(sums + [float(n)], torch.float64, group)
        total = [0.0] * len(sums)
        for r in every:
            for i in range(len(sums)):
                total[i] += r[i]
        total_n = 0
        for r in every:
            total_n += int(r[-1])
    return (tuple(total) if many else total[0]), total_n
