"""``verl_policy_loss``: the library's policy loss behind verl's registered-loss signature.

verl (``verl.trainer.ppo.core_algos``) looks policy losses up by
``actor.policy_loss.loss_mode`` and calls them as

    pg_loss, pg_metrics = fn(old_log_prob, log_prob, advantages, response_mask,
                             loss_agg_mode, config, rollout_is_weights)

with ``config`` the actor config. The entropy bonus and the KL loss are added by verl's
caller, so this function computes the policy-gradient term only, as verl's own ``vanilla``
does. Registration and a verl-style AEPO loop: docs/TORCH.md.
"""
from collections.abc import Mapping

import torch

from ..errors import AepoError, ConfigError, InvalidValueError
from ._tensors import common_device, no_grad_input, require_float, scalar
from .loss import loss_handle, policy_loss

__all__ = ["verl_policy_loss", "verl_loss_config", "AEPO_LOSS_MODE"]

AEPO_LOSS_MODE = "aepo"
"""The loss_mode under which docs/TORCH.md registers this function; it runs ``vanilla``."""

_VERL_NAMES = {
    "loss.clip_ratio_low": "clip_ratio_low",
    "loss.clip_ratio_high": "clip_ratio_high",
    "loss.clip_ratio_c": "clip_ratio_c",
    "loss.policy_loss": "policy_loss.loss_mode",
    "loss.loss_agg_mode": "loss_agg_mode",
    "loss.loss_scale_factor": "loss_scale_factor",
    "loss.clip_cov_ratio": "policy_loss.clip_cov_ratio",
    "loss.clip_cov_lb": "policy_loss.clip_cov_lb",
    "loss.clip_cov_ub": "policy_loss.clip_cov_ub",
    "loss.kl_cov_ratio": "policy_loss.kl_cov_ratio",
    "loss.ppo_kl_coef": "policy_loss.ppo_kl_coef",
}

# verl's PolicyLossConfig fields of the Clip-Cov and KL-Cov modes, read when set.
_COV_KEYS = ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "kl_cov_ratio", "ppo_kl_coef")

_VERL_ARGS = {"logp": "log_prob", "old_logp": "old_log_prob", "mask": "response_mask",
              "is_weights": "rollout_is_weights"}


def _field(obj, key):
    """``obj.key`` or ``obj[key]`` (dataclass, OmegaConf DictConfig or dict), or None."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _number(value, name, default):
    if value is None:
        return default
    return scalar(value, name, float)


def verl_loss_config(config, loss_agg_mode="token-mean", response_length=None):
    """The libaepo config document and the global counts that verl's actor ``config`` means.

    Reads ``clip_ratio``, ``clip_ratio_low``, ``clip_ratio_high`` (None falls back to
    ``clip_ratio``, as in verl), ``clip_ratio_c``, ``policy_loss.loss_mode``, the Clip-Cov
    and KL-Cov knobs ``policy_loss.clip_cov_ratio``, ``clip_cov_lb``, ``clip_cov_ub``,
    ``kl_cov_ratio`` and ``ppo_kl_coef`` (when set), ``loss_scale_factor`` and
    ``global_batch_info`` (``dp_size``, ``batch_num_tokens``,
    ``global_batch_size``, ``loss_scale_factor``); every other field is ignored. Returns
    ``(document, compute_kwargs)``.
    """
    clip = _number(_field(config, "clip_ratio"), "clip_ratio", 0.2)
    low = _number(_field(config, "clip_ratio_low"), "clip_ratio_low", clip)
    high = _number(_field(config, "clip_ratio_high"), "clip_ratio_high", clip)
    c = _number(_field(config, "clip_ratio_c"), "clip_ratio_c", 3.0)
    mode = _field(_field(config, "policy_loss"), "loss_mode")
    mode = "vanilla" if mode is None or mode == AEPO_LOSS_MODE else str(mode)
    info = _field(config, "global_batch_info") or {}
    loss = {"policy_loss": mode, "loss_agg_mode": str(loss_agg_mode), "clip_ratio_low": low,
            "clip_ratio_high": high, "clip_ratio_c": c}
    for key in _COV_KEYS:
        value = _field(_field(config, "policy_loss"), key)
        if value is not None:
            loss[key] = _number(value, f"policy_loss.{key}", None)
    if loss_agg_mode == "seq-mean-token-sum-norm":
        # verl divides by loss_scale_factor, or by the padded response length when it is None.
        k = _field(info, "loss_scale_factor")
        if k is None:
            k = _field(config, "loss_scale_factor")
        loss["loss_scale_factor"] = _number(k, "loss_scale_factor", response_length)
    kwargs = {}
    dp = _field(info, "dp_size")
    if dp is not None:
        kwargs["dp_size"] = scalar(dp, "global_batch_info.dp_size", int)
    tokens = _field(info, "batch_num_tokens")
    if tokens is not None:
        kwargs["global_tokens"] = scalar(tokens, "global_batch_info.batch_num_tokens", int)
    seqs = _field(info, "global_batch_size")
    if seqs is not None:
        kwargs["global_seqs"] = scalar(seqs, "global_batch_info.global_batch_size", int)
    return {"loss": loss}, kwargs


def _handle(document):
    try:
        return loss_handle(document)
    except ConfigError as e:
        name = _VERL_NAMES.get(e.argument, e.argument)
        if name == "policy_loss.loss_mode":
            msg = (f"policy_loss.loss_mode: {document['loss']['policy_loss']!r} is not a loss libaepo runs here; "
                   f"use {AEPO_LOSS_MODE!r} or 'vanilla' ({e})")
        else:
            msg = f"{name}: {e}"
        raise ConfigError(msg, argument=name, index=e.index) from None


def _mask(response_mask):
    """verl's response mask as bool: bool and integer masks as they are, float masks of 0/1."""
    if isinstance(response_mask, torch.Tensor) and response_mask.is_floating_point():
        m = response_mask.detach()
        bad = (m != 0) & (m != 1)
        if bool(bad.any()):
            i = int(bad.flatten().nonzero()[0])
            raise InvalidValueError(f"response_mask: response_mask[{i}] = {float(m.flatten()[i])}; expected 0 or 1",
                                    argument="response_mask", index=i)
        return m != 0
    return response_mask


def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                     rollout_is_weights=None):
    """verl's registered policy-loss signature, computed by libaepo.

    ``log_prob``, ``old_log_prob``, ``advantages`` (per token, as verl passes them) and
    ``response_mask`` are [B, L]; ``rollout_is_weights`` [B, L] multiplies the per-token loss
    before aggregation. ``config`` is verl's actor config (attribute or dict access; None
    means verl's defaults). Returns ``(pg_loss, metrics)``: the loss as a 0-dim tensor whose
    gradient reaches ``log_prob``, and the metrics (floats) under verl's names
    ``actor/pg_clipfrac``, ``actor/ppo_kl``, ``actor/pg_clipfrac_lower``, plus ``aepo/nll``,
    the micro-batch's token-mean of -log_prob: verl averages metrics over micro-batches and
    ranks, which gives the AEPO reference's entropy statistic for the controller.
    """
    require_float(log_prob, "log_prob")
    common_device(("log_prob", log_prob), ("old_log_prob", old_log_prob), ("advantages", advantages),
                  ("response_mask", response_mask), ("rollout_is_weights", rollout_is_weights))
    for name, x in (("old_log_prob", old_log_prob), ("advantages", advantages),
                    ("rollout_is_weights", rollout_is_weights)):
        no_grad_input(x, name)
    document, kwargs = verl_loss_config(config, loss_agg_mode, response_length=log_prob.shape[-1])
    handle = _handle(document)
    try:
        loss, m = policy_loss(log_prob, old_log_prob, advantages, _mask(response_mask), config=handle,
                              return_metrics=True, is_weights=rollout_is_weights, **kwargs)
    except AepoError as e:
        # Errors name the library's arguments; say which of verl's arguments that is.
        verl = _VERL_ARGS.get(e.argument)
        if verl is None:
            raise
        raise type(e)(f"{verl}: {e}", argument=verl, index=e.index, status=e.status) from None
    return loss, {"actor/pg_clipfrac": m["pg_clipfrac"], "actor/ppo_kl": m["ppo_kl"],
                  "actor/pg_clipfrac_lower": m["pg_clipfrac_lower"], "aepo/nll": _nll(log_prob, response_mask)}


def _nll(log_prob, response_mask):
    """The micro-batch's token-mean of -log_prob (0 for an empty micro-batch): the AEPO reference's
    entropy statistic, which verl's mean over micro-batches and ranks then reproduces."""
    valid = torch.as_tensor(response_mask, device=log_prob.device) != 0
    n = int(valid.sum())
    if n == 0:
        return 0.0
    return -float(torch.where(valid, log_prob.detach(), torch.zeros((), dtype=log_prob.dtype,
                                                                       device=log_prob.device)).sum(
        dtype=torch.float64)) / n
