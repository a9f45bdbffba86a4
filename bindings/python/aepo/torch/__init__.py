"""aepo.torch: libaepo for PyTorch trainers (docs/TORCH.md).

- ``policy_loss``: the policy loss as a differentiable function whose backward pass is the
  library's exact gradient;
- ``logits_stats``: log-probs and exact entropy from logits at the policy temperature, with
  autograd;
- ``FusedHead``: the same from hidden states and the head weight without a logits tensor,
  and the policy loss with every gradient in one pass;
- ``verl_policy_loss``: verl's registered policy-loss signature;
- ``aepo.torch.distributed``: global counts and sums over a torch.distributed group.

Tensors may be on any one device (the library runs on the CPU; they are moved there and
back) and float32, float64, bfloat16 or float16 (upcast to float32 with one copy);
gradients come back in their tensor's dtype and on its device.
"""
try:
    import torch as _torch  # noqa: F401
except ImportError as _e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("aepo.torch needs PyTorch (pip install 'aepo[torch]'); the rest of aepo works without it") \
        from _e

from . import distributed
from .fused import FusedHead, FusedHeadLossResult
from .kernels import LogitsStats, logits_stats
from .loss import clear_cache, loss_handle, policy_loss
from .verl import AEPO_LOSS_MODE, verl_loss_config, verl_policy_loss
from .._deprecated import module_getattr as _module_getattr

__all__ = [
    "policy_loss", "loss_handle", "clear_cache",
    "LogitsStats", "logits_stats",
    "FusedHead", "FusedHeadLossResult",
    "verl_policy_loss", "verl_loss_config", "AEPO_LOSS_MODE",
    "distributed",
]

# Deprecated since 0.2, removed in the next release: old name -> (module, new name, use instead).
_DEPRECATED = {
    "FusedLMHead": ("aepo.torch.fused", "FusedHead", "aepo.torch.FusedHead"),
    "FusedPolicyLoss": ("aepo.torch.fused", "FusedHeadLossResult", "aepo.torch.FusedHeadLossResult"),
}
__getattr__ = _module_getattr(__name__, _DEPRECATED)
