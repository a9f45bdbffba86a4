"""The policy loss (vanilla, gspo, cispo, gpg/reinforce, clip_cov, kl_cov), the outcome
advantages (grpo, rloo, reinforce_plus_plus_baseline, grpo_passk) and AEPO's regulariser
selection.

``Loss(cfg).compute(...)`` returns the loss, its exact gradient with respect to the
log-probs (a PyTorch trainer then calls ``logp.backward(torch.from_numpy(res.grad))``), the
gradient with respect to the per-token entropy, and the metrics. Formulas: docs/LOSS.md.

Arrays: float inputs in another dtype or layout are converted to float32 C-contiguous with
one copy; masks and ``reg_rows`` accept bool or any integer dtype (values must be 0/1);
outputs are allocated here, float32 C-contiguous.
"""
import ctypes
from ctypes import c_double, c_float, c_int64
from typing import NamedTuple, Optional

import numpy as np

from . import _lib, _loss_inputs
from ._arrays import float_in, int_in, ptr
from .errors import ShapeError
from ._deprecated import module_getattr as _module_getattr

METRIC_NAMES = tuple(_lib.lib.aepo_loss_metric_name(i).decode() for i in range(_lib.lib.aepo_loss_metric_count()))


class LossResult(NamedTuple):
    loss: float
    grad: np.ndarray                    # f32[B, L], 0 where mask = 0
    grad_entropy: Optional[np.ndarray]  # f32[B, L], or None without entropy
    metrics: dict                       # name -> float, names as METRIC_NAMES


class RegSelection(NamedTuple):
    indices: np.ndarray  # i64[k], ascending rows of the regulariser batch
    n_positive: int      # rows whose advantage is above the threshold
    k: int

    def splice(self, main, reg):
        """The `replace` update batch along axis 0: ``reg[indices] ++ main[k:]``.

        For the advantages pass ``main`` = A_main and ``reg`` = ones (or mark the first k
        rows with ``reg_rows`` and let the loss take their advantage as 1)."""
        main = np.asarray(main)
        reg = np.asarray(reg)
        return np.concatenate([reg[self.indices], main[self.k:]], axis=0)


def _invalid(msg, name):
    from .errors import InvalidValueError
    return InvalidValueError(msg, argument=name, status=1)


class Loss(_lib.NativeHandle):
    """A loss handle built from the ``loss``, ``advantage`` and ``regularizer`` sections."""

    _kind = "loss"

    # -- the loss ---------------------------------------------------------------------
    def compute(self, logp, old_logp, advantages, mask, *, ref_logp=None, is_weights=None, entropy=None,
                reg_rows=None, reg_alpha=None, global_tokens=None, global_seqs=None, global_reg_tokens=None,
                dp_size=1, step=0):
        """Loss, gradients and metrics of one call (a micro-batch or a whole batch).

        logp, old_logp, mask, ref_logp, is_weights, entropy: [B, L]; advantages: [B] (per
        sequence) or [B, L] (per token); reg_rows: [B] 0/1. Global counts and dp_size make
        micro-batch results add up to the one-call result (docs/LOSS.md; clip_cov and kl_cov
        take their statistics per call). ``step`` keys clip_cov's random pick, with
        ``loss.seed``.

        ``metrics`` maps every name of ``METRIC_NAMES`` to a float. ``nll_main``,
        ``entropy_main`` and ``n_tokens_main`` (and the ``_reg`` three) are plain token means
        of -logp and entropy over this call's valid tokens of main rows (of the rows marked in
        ``reg_rows``) and their count: sum mean * count and count over micro-batches and
        ranks for the means of the whole batch."""
        h = self._handle()
        lp = float_in(logp, "logp", ndim=2)
        B, L = lp.shape
        inp, _keep = _loss_inputs.decode(
            B, L, logp=lp, old_logp=old_logp, advantages=advantages, mask=mask, ref_logp=ref_logp,
            is_weights=is_weights, entropy=entropy, reg_rows=reg_rows, reg_alpha=reg_alpha,
            global_tokens=global_tokens, global_seqs=global_seqs, global_reg_tokens=global_reg_tokens,
            dp_size=dp_size, step=step)

        grad = np.empty((B, L), dtype=np.float32)
        grad_ent = None if entropy is None else np.empty((B, L), dtype=np.float32)
        metrics = (c_double * len(METRIC_NAMES))()
        value = c_double(0.0)
        _lib.call(_lib.lib.aepo_loss_compute, h, ctypes.byref(inp), ctypes.byref(value), ptr(grad, c_float),
                  ptr(grad_ent, c_float), metrics, len(METRIC_NAMES))
        return LossResult(value.value, grad, grad_ent, dict(zip(METRIC_NAMES, metrics)))

    # -- advantages and the regulariser -----------------------------------------------
    def compute_advantages(self, rewards, group_ids, *, lengths=None):
        """Advantages with this handle's ``advantage`` section: f32[B].

        ``lengths`` (valid tokens per response) is required by
        ``reinforce_plus_plus_baseline``, which whitens over tokens; the others ignore it."""
        r = float_in(rewards, "rewards", ndim=1)
        n = r.shape[0]
        g = _ids(group_ids, n)
        ln = None if lengths is None else int_in(lengths, "lengths", np.int64, ndim=1)
        if ln is not None and ln.shape != (n,):
            raise ShapeError(f"lengths: expected shape ({n},), got {ln.shape}", argument="lengths")
        out = np.empty(n, dtype=np.float32)
        _lib.call(_lib.lib.aepo_loss_advantages, self._handle(), ptr(r, c_float), ptr(g, c_int64), n,
                  ptr(ln, c_int64), ptr(out, c_float))
        return out

    def select_regularizer(self, rewards, group_ids, *, k_max, halve):
        """AEPO's regulariser rows with this handle's estimator and regularizer.threshold."""
        r = float_in(rewards, "rewards", ndim=1)
        n = r.shape[0]
        g = _ids(group_ids, n)
        k = c_int64(0)
        npos = c_int64(0)
        kmax = _lib.int64(int(k_max), "k_max")
        if kmax < 0:
            raise _invalid(f"k_max: must be >= 0, got {kmax}", "k_max")
        idx = np.empty(min(kmax, n), dtype=np.int64)
        _lib.call(_lib.lib.aepo_loss_select_regularizer, self._handle(), ptr(r, c_float), ptr(g, c_int64), n, kmax,
                  1 if halve else 0, ptr(idx, c_int64), idx.shape[0], ctypes.byref(k), ctypes.byref(npos))
        return RegSelection(idx[:k.value].copy(), int(npos.value), int(k.value))


def _ids(group_ids, n):
    raw = np.asarray(group_ids)
    # An empty list arrives as float64; it holds no non-integer value.
    g = np.zeros(0, np.int64) if raw.size == 0 and raw.ndim == 1 else int_in(raw, "group_ids", np.int64, ndim=1)
    if g.shape != (n,):
        raise ShapeError(f"group_ids: expected shape ({n},), got {g.shape}", argument="group_ids")
    return g


def compute_advantages(rewards, group_ids, *, estimator=None, lengths=None, **advantage_keys):
    """Outcome advantages, one per response: f32[B].

    ``estimator`` and ``advantage_keys`` are keys of the config's ``advantage`` section
    (``norm_adv_by_std_in_grpo``, ``epsilon``, ``rloo_singleton``, ...); omitted keys take
    their defaults. ``lengths`` (valid tokens per response) is required by
    ``reinforce_plus_plus_baseline``."""
    section = dict(advantage_keys)
    if estimator is not None:
        section["estimator"] = estimator
    with Loss({"advantage": section}) as loss:
        return loss.compute_advantages(rewards, group_ids, lengths=lengths)


def select_regularizer(rewards, group_ids, *, k_max, halve, threshold=0.05):
    """AEPO's regulariser selection over the rollouts drawn at the controller's temperature.

    Positives are rows whose group advantage (GRPO within their groups) is > threshold; the
    first min(k_max, n_positive) in input order are kept, then the first floor-half of those
    when ``halve``. ``k_max`` and ``halve`` come from the controller's decision."""
    with Loss({"regularizer": {"threshold": threshold}}) as loss:
        return loss.select_regularizer(rewards, group_ids, k_max=k_max, halve=halve)


# Deprecated since 0.2, removed in the next release: old name -> (module, new name, use instead).
__getattr__ = _module_getattr(__name__, {"PolicyLoss": ("aepo.loss", "Loss", "aepo.Loss")})
