"""aepo: controllable policy entropy for RL finetuning (AEPO, arXiv 2510.08141).

Python binding of libaepo. Every class is a context manager with an idempotent ``close()``;
an instance belongs to one thread at a time. Configs are ``dict | str | None``.
"""
from . import _lib
from .config import default_config, default_config_json, validate_config
from .errors import (AepoError, BufferTooSmallError, ConfigError, DeviceError, DTypeError, InternalError,
                     InvalidValueError, NonFiniteError, NullPointerError, OutOfMemoryError, ShapeError, StateError)

__version__ = _lib.version
ABI_VERSION = _lib.ABI_VERSION
library_path = _lib.lib_path

from .controller import Controller, Decision, Estimate
from .kernels import LogitsStats, logits_backward, logits_stats
from .loss import Loss, LossResult, RegSelection, compute_advantages, select_regularizer
from .sampler import SampleResult, Sampler
from .fused import FusedHead
from .runtime import runtime_info
from ._deprecated import module_getattr as _module_getattr
# @@EXPORTS@@

__all__ = [
    "__version__", "ABI_VERSION", "library_path",
    "default_config", "default_config_json", "validate_config", "runtime_info",
    "Controller", "Decision", "Estimate",
    "LogitsStats", "logits_backward", "logits_stats",
    "Loss", "LossResult", "RegSelection", "compute_advantages", "select_regularizer",
    "AepoError", "BufferTooSmallError", "ConfigError", "DeviceError", "DTypeError", "InternalError",
    "InvalidValueError", "NonFiniteError", "NullPointerError", "OutOfMemoryError", "ShapeError", "StateError",
    "Sampler", "SampleResult",
    "FusedHead",
]

# Deprecated since 0.2, removed in the next release: old name -> (module, new name, use instead).
_DEPRECATED = {
    "PolicyLoss": ("aepo.loss", "Loss", "aepo.Loss"),
    "EntropyController": ("aepo.controller", "Controller", "aepo.Controller"),
    "FusedLMHead": ("aepo.fused", "FusedHead", "aepo.FusedHead"),
}
__getattr__ = _module_getattr(__name__, _DEPRECATED)
