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

from .controller import Decision, EntropyController, Estimate
from .kernels import LogitsStats, logits_backward, logits_stats
from .loss import LossResult, PolicyLoss, RegSelection, compute_advantages, select_regularizer
from .sampler import SampleResult, Sampler
from .fused import FusedLMHead
# @@EXPORTS@@

__all__ = [
    "__version__", "ABI_VERSION", "library_path",
    "default_config", "default_config_json", "validate_config",
    "Decision", "EntropyController", "Estimate",
    "LogitsStats", "logits_backward", "logits_stats",
    "LossResult", "PolicyLoss", "RegSelection", "compute_advantages", "select_regularizer",
    "AepoError", "BufferTooSmallError", "ConfigError", "DeviceError", "DTypeError", "InternalError",
    "InvalidValueError", "NonFiniteError", "NullPointerError", "OutOfMemoryError", "ShapeError", "StateError",
    "Sampler", "SampleResult",
    "FusedLMHead",
]
