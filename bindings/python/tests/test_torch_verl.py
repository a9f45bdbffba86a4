"""aepo.torch.verl_policy_loss with stand-ins for verl's actor config (verl is not installed):
the vanilla numbers of the loss example in docs/API.md, verl's metric names, the global batch info, and the fields
it must ignore."""
import math
from dataclasses import dataclass, field
from typing import Optional

import pytest

import aepo

torch = pytest.importorskip("torch")
import aepo.torch as at  # noqa: E402
import torch_reference as ref  # noqa: E402

LP = [[-1, -0.5, -2, -0.1], [-0.3, -1.2, -0.7, -9.0]]
OLP = [[-1.2, -0.4, -1.0, -0.1], [-0.3, -2.7, -0.2, -0.5]]
MASK = [[1, 1, 1, 0], [1, 1, 1, 1]]

ANCHORS = {  # the loss example of docs/API.md, eps_low 0.2, eps_high 0.28, c 3
    "token-mean": 0.4436971975,
    "seq-mean-token-sum": 1.5529401913,
    "seq-mean-token-mean": 0.2843133967,
    "seq-mean-token-sum-norm": 0.3882350478,  # current verl: / (G K), K = 4 = the padded length
}
METRICS = {"actor/pg_clipfrac": 0.2857142853, "actor/pg_clipfrac_lower": 0.1428571427, "actor/ppo_kl": 1.1999999983}


@dataclass
class PolicyLossConfig:
    loss_mode: str = "vanilla"
    clip_cov_ratio: float = 0.0002  # verl's defaults, which are libaepo's
    ppo_kl_coef: float = 0.1
    kl_cov_ratio: Optional[float] = None


@dataclass
class ActorConfig:
    """The fields of verl's ActorConfig that matter here, plus some that must be ignored."""

    strategy: str = "fsdp"
    ppo_mini_batch_size: int = 256
    clip_ratio: float = 0.2
    clip_ratio_low: Optional[float] = 0.2
    clip_ratio_high: Optional[float] = 0.28
    clip_ratio_c: float = 3.0
    policy_loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    loss_agg_mode: str = "token-mean"
    loss_scale_factor: Optional[int] = None
    entropy_coeff: float = 0.01      # applied by verl's caller, not by the policy loss
    use_kl_loss: bool = True
    kl_loss_coef: float = 0.5
    global_batch_info: dict = field(default_factory=dict)


def tensors(dtype=torch.float32):
    lp = torch.tensor(LP, dtype=dtype, requires_grad=True)
    adv = torch.tensor([[1.0] * 4, [-1.0] * 4], dtype=dtype) * torch.tensor(MASK)  # per token, as verl passes it
    return torch.tensor(OLP, dtype=dtype), lp, adv, torch.tensor(MASK).bool()


def check_metrics(metrics):
    assert set(metrics) == set(METRICS) | {"aepo/nll"}
    assert abs(metrics["aepo/nll"] - 14.7 / 7) <= 1e-7  # -(sum of log_prob over the mask) / 7
    for k, want in METRICS.items():
        assert isinstance(metrics[k], float) and abs(metrics[k] - want) <= 1e-7 * want, (k, metrics[k], want)


@pytest.mark.parametrize("mode", list(ANCHORS))
def test_anchor_numbers_with_an_attribute_config(mode):
    olp, lp, adv, mask = tensors()
    cfg = ActorConfig(loss_agg_mode=mode)
    loss, metrics = at.verl_policy_loss(olp, lp, adv, mask, cfg.loss_agg_mode, cfg)
    assert abs(loss.item() - ANCHORS[mode]) <= 1e-7 * ANCHORS[mode], (mode, loss.item())
    check_metrics(metrics)
    loss.backward()
    lp64 = lp.detach().double().requires_grad_(True)
    ref.policy_loss(lp64, olp.double(), adv.double(), mask, clip_low=0.2, clip_high=0.28, clip_c=3.0, agg=mode,
                    scale=4).backward()
    assert (lp.grad.double() - lp64.grad).abs().max() <= 1e-6 * lp64.grad.abs().max()


def test_dict_config_and_verl_defaults():
    olp, lp, adv, mask = tensors()
    d = {"clip_ratio": 0.2, "clip_ratio_low": None, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0,
         "policy_loss": {"loss_mode": "vanilla"}, "ppo_epochs": 4, "optim": {"lr": 1e-6}}
    loss, metrics = at.verl_policy_loss(olp, lp, adv, mask, "token-mean", d)
    assert abs(loss.item() - ANCHORS["token-mean"]) <= 1e-7 * ANCHORS["token-mean"]
    check_metrics(metrics)
    # clip_ratio_low/high of None fall back to clip_ratio, as in verl; with 0.28 on both sides
    # the anchor's first row is no longer clipped on the low side.
    d2 = {"clip_ratio": 0.28, "clip_ratio_low": None, "clip_ratio_high": None}
    loss2, _ = at.verl_policy_loss(olp, lp, adv, mask, "token-mean", d2)
    want = ref.policy_loss(lp.detach().double(), olp.double(), adv.double(), mask, clip_low=0.28, clip_high=0.28)
    assert abs(loss2.item() - want.item()) <= 1e-6 * abs(want.item()) and loss2.item() != loss.item()
    # None is verl's defaults (0.2 / 0.2 / 3.0).
    loss3, _ = at.verl_policy_loss(olp, lp, adv, mask)
    want3 = ref.policy_loss(lp.detach().double(), olp.double(), adv.double(), mask)
    assert abs(loss3.item() - want3.item()) <= 1e-6 * abs(want3.item())


def test_loss_mode_names():
    olp, lp, adv, mask = tensors()
    base = at.verl_policy_loss(olp, lp, adv, mask, "token-mean", ActorConfig())[0].item()
    cfg = ActorConfig(policy_loss=PolicyLossConfig(loss_mode=at.AEPO_LOSS_MODE))  # the name docs/TORCH.md registers
    assert at.verl_policy_loss(olp, lp, adv, mask, "token-mean", cfg)[0].item() == base
    # A mode the library does not run is named as verl names it.
    with pytest.raises(aepo.ConfigError) as e:
        at.verl_policy_loss(olp, lp, adv, mask, "token-mean", ActorConfig(policy_loss={"loss_mode": "sapo"}))
    assert e.value.argument == "policy_loss.loss_mode" and "sapo" in str(e.value)
    # gspo runs, with the aggregation verl forces on it; any other is an error naming it.
    gspo = ActorConfig(policy_loss={"loss_mode": "gspo"})
    with pytest.raises(aepo.ConfigError) as e:
        at.verl_policy_loss(olp, lp, adv, mask, "token-mean", gspo)
    assert e.value.argument == "loss_agg_mode" and "gspo" in str(e.value)
    val, _ = at.verl_policy_loss(olp, lp, adv, mask, "seq-mean-token-mean", gspo)
    assert math.isfinite(val.item())
    with pytest.raises(aepo.ConfigError) as e:
        at.verl_policy_loss(olp, lp, adv, mask, "token-mean", ActorConfig(clip_ratio_c=1.0))
    assert e.value.argument == "clip_ratio_c"
    with pytest.raises(aepo.ConfigError) as e:
        at.verl_policy_loss(olp, lp, adv, mask, "seq-mean", ActorConfig())
    assert e.value.argument == "loss_agg_mode"


def test_clip_cov_and_kl_cov_knobs_are_read():
    """verl's policy_loss.kl_cov_ratio / ppo_kl_coef (and the clip_cov ones) reach the loss."""
    olp, lp, adv, mask = tensors()
    cfg = ActorConfig(policy_loss=PolicyLossConfig(loss_mode="kl_cov", kl_cov_ratio=0.3, ppo_kl_coef=0.5))
    val, metrics = at.verl_policy_loss(olp, lp, adv, mask, "token-mean", cfg)
    # Tests/fixtures/loss_modes.json, case kl_cov_anchor: the same inputs and settings.
    assert abs(val.item() - 1.1277576462) <= 1e-7 * 1.1277576462
    assert abs(metrics["actor/ppo_kl"] - 11.8 / 7) <= 1e-7
    with pytest.raises(aepo.ConfigError) as e:
        at.verl_policy_loss(olp, lp, adv, mask, "token-mean",
                            ActorConfig(policy_loss=PolicyLossConfig(loss_mode="clip_cov", clip_cov_ratio=0.0)))
    assert e.value.argument == "policy_loss.clip_cov_ratio"


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_global_batch_info_makes_shards_add_up(mode):
    """Two dp ranks, one row each: with verl's global_batch_info the shard losses and gradients,
    averaged over ranks as DDP does, equal the one-call result on the whole batch."""
    olp, lp, adv, mask = tensors()
    whole, _ = at.verl_policy_loss(olp, lp, adv, mask, mode, ActorConfig())
    whole.backward()
    info = {"dp_size": 2, "batch_num_tokens": torch.tensor(int(mask.sum())), "global_batch_size": 2,
            "loss_scale_factor": None}
    cfg = ActorConfig(global_batch_info=info)
    losses, grads = [], []
    for r in range(2):
        lp_r = lp.detach()[r:r + 1].clone().requires_grad_(True)
        loss_r, _ = at.verl_policy_loss(olp[r:r + 1], lp_r, adv[r:r + 1], mask[r:r + 1], mode, cfg)
        loss_r.backward()
        losses.append(loss_r.item())
        grads.append(lp_r.grad)
    assert abs(sum(losses) / 2 - whole.item()) <= 1e-6 * abs(whole.item())
    assert torch.allclose(torch.cat(grads) / 2, lp.grad, rtol=1e-6, atol=0)
    # An empty micro-batch contributes nothing.
    lp_e = lp.detach()[:1].clone().requires_grad_(True)
    empty, m_e = at.verl_policy_loss(olp[:1], lp_e, adv[:1], torch.zeros(1, 4, dtype=torch.bool), mode, cfg)
    empty.backward()
    assert empty.item() == 0 and torch.all(lp_e.grad == 0) and m_e["aepo/nll"] == 0
    # Without the global info dp_size > 1 is refused, as verl's agg_loss does.
    with pytest.raises(aepo.AepoError):
        at.verl_policy_loss(olp[:1], lp.detach()[:1], adv[:1], mask[:1], mode,
                            ActorConfig(global_batch_info={"dp_size": 2}))


def test_rollout_is_weights_and_float_masks():
    olp, lp, adv, mask = tensors()
    w = torch.tensor([[0.5, 1.0, 2.0, 7.0], [1.0, 0.25, 1.5, 1.0]])
    loss, _ = at.verl_policy_loss(olp, lp, adv, mask.float(), "token-mean", ActorConfig(), rollout_is_weights=w)
    loss.backward()
    lp64 = lp.detach().double().requires_grad_(True)
    want = ref.policy_loss(lp64, olp.double(), adv.double(), mask, clip_high=0.28, is_weights=w.double())
    want.backward()
    assert abs(loss.item() - want.item()) <= 1e-6 * abs(want.item())
    assert (lp.grad.double() - lp64.grad).abs().max() <= 1e-6 * lp64.grad.abs().max()
    with pytest.raises(aepo.InvalidValueError) as e:
        at.verl_policy_loss(olp, lp, adv, mask.float() * 0.5, "token-mean", ActorConfig())
    assert e.value.argument == "response_mask"


def test_loss_scale_factor_is_read_from_the_config():
    olp, lp, adv, mask = tensors()
    a, _ = at.verl_policy_loss(olp, lp, adv, mask, "seq-mean-token-sum-norm", ActorConfig(loss_scale_factor=8))
    b, _ = at.verl_policy_loss(olp, lp, adv, mask, "seq-mean-token-sum-norm",
                               ActorConfig(global_batch_info={"loss_scale_factor": 8}))
    assert abs(a.item() - ANCHORS["seq-mean-token-sum-norm"] / 2) <= 1e-7 and a.item() == b.item()
