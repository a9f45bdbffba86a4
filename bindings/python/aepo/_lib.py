"""Loading libaepo and the one table of its C functions.

Every exported function is declared once in ``_TABLE`` with its restype and argtypes, so a
missing or mistyped entry fails at import, not in the middle of a training step. Calls that
return a status go through :func:`call`, which raises the matching :mod:`aepo.errors`
exception with the library's message.
"""
import ctypes
import ctypes.util
import os
from ctypes import POINTER, c_char, c_char_p, c_double, c_float, c_int32, c_int64, c_size_t, c_uint8, c_void_p

import json

from .errors import InvalidValueError, error_for_status

ABI_VERSION = 1
ERROR_ARGUMENT_SIZE = 64
ERROR_MESSAGE_SIZE = 320


class Error(ctypes.Structure):
    """Mirror of ``aepo_error``."""

    _fields_ = [
        ("status", c_int32),
        ("reserved", c_int32),
        ("index", c_int64),
        ("argument", c_char * ERROR_ARGUMENT_SIZE),
        ("message", c_char * ERROR_MESSAGE_SIZE),
    ]


class CDecision(ctypes.Structure):
    """Mirror of ``aepo_decision`` (version 2, 144 bytes)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("step", c_int64),
        ("temperature", c_double),
        ("alpha", c_double),
        ("target", c_double),
        ("statistic", c_double),
        ("smoothed", c_double),
        ("k_max", c_int64),
        ("halve", c_int32),
        ("mode", c_int32),
        ("reason", c_int32),
        ("reserved", c_int32),
        ("est_gain", c_double),
        ("est_same_step", c_double),
        ("est_process_noise", c_double),
        ("est_measurement_noise", c_double),
        ("est_horizon", c_double),
        ("est_feedback", c_double),
        ("est_confidence", c_double),
        ("est_delay", c_int32),
        ("reserved2", c_int32),
    ]

    def __init__(self):
        super().__init__()
        self.struct_size = ctypes.sizeof(CDecision)


class LossInputs(ctypes.Structure):
    """Mirror of ``aepo_loss_inputs``; ``_loss_inputs.decode`` fills it from arrays."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("B", c_int64),
        ("L", c_int64),
        ("logp", POINTER(c_float)),
        ("old_logp", POINTER(c_float)),
        ("advantages", POINTER(c_float)),
        ("mask", POINTER(c_uint8)),
        ("ref_logp", POINTER(c_float)),
        ("is_weights", POINTER(c_float)),
        ("entropy", POINTER(c_float)),
        ("reg_rows", POINTER(c_uint8)),
        ("adv_per_token", c_int32),
        ("reserved", c_int32),
        ("reg_alpha", c_double),
        ("global_tokens", c_int64),
        ("global_seqs", c_int64),
        ("global_reg_tokens", c_int64),
        ("dp_size", c_int64),
        ("step", c_int64),
    ]


class LogitsInputs(ctypes.Structure):
    """Mirror of ``aepo_logits_inputs``, the shared inputs of the logits kernels; fill it after
    ``aepo_logits_inputs_init`` (see :func:`init`)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("logits", POINTER(c_float)),
        ("B", c_int64),
        ("L", c_int64),
        ("V", c_int64),
        ("stride_b", c_int64),
        ("stride_l", c_int64),
        ("targets", POINTER(c_int32)),
        ("mask", POINTER(c_uint8)),
        ("temperature", c_double),
        ("threads", c_int64),
    ]


class FusedHeadInputs(ctypes.Structure):
    """Mirror of ``aepo_fused_head_inputs``, the inputs of every fused-head call; fill it after
    ``aepo_fused_head_inputs_init`` (see :func:`init`)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("X", POINTER(c_float)),
        ("W", POINTER(c_float)),
        ("bias", POINTER(c_float)),
        ("targets", POINTER(c_int32)),
        ("mask", POINTER(c_uint8)),
        ("N", c_int64),
        ("D", c_int64),
        ("V", c_int64),
    ]


c_int32_p = POINTER(c_int32)
c_int64_p = POINTER(c_int64)
c_float_p = POINTER(c_float)
c_double_p = POINTER(c_double)
c_uint8_p = POINTER(c_uint8)
c_size_t_p = POINTER(c_size_t)
Error_p = POINTER(Error)
Handle = c_void_p
Handle_p = POINTER(c_void_p)
CDecision_p = POINTER(CDecision)
LossInputs_p = POINTER(LossInputs)
LogitsInputs_p = POINTER(LogitsInputs)
FusedHeadInputs_p = POINTER(FusedHeadInputs)

# name: (restype, [argtypes]). Sections follow include/aepo.h.
_TABLE = {
    # versions and status names
    "aepo_version_string": (c_char_p, []),
    "aepo_version_number": (c_int32, []),
    "aepo_abi_version": (c_int32, []),
    "aepo_status_name": (c_char_p, [c_int32]),
    # config
    "aepo_default_config_json": (c_int32, [c_char_p, c_size_t, c_size_t_p, Error_p]),
    "aepo_config_validate": (c_int32, [c_char_p, c_size_t, Error_p]),
    "aepo_runtime_info": (c_int32, [c_char_p, c_size_t, c_size_t_p, Error_p]),
    "aepo_config_normalize": (c_int32, [c_char_p, c_size_t, c_char_p, c_size_t, c_size_t_p, Error_p]),
    # loss
    "aepo_loss_metric_count": (c_int32, []),
    "aepo_loss_metric_name": (c_char_p, [c_int32]),
    "aepo_loss_inputs_init": (c_int32, [LossInputs_p, c_size_t, Error_p]),
    "aepo_loss_create": (c_int32, [c_char_p, c_size_t, Handle_p, Error_p]),
    "aepo_loss_free": (None, [Handle]),
    "aepo_loss_config_json": (c_int32, [Handle, c_char_p, c_size_t, c_size_t_p, Error_p]),
    "aepo_loss_compute": (c_int32, [Handle, LossInputs_p, c_double_p, c_float_p, c_float_p, c_double_p, c_size_t,
                                    Error_p]),
    "aepo_loss_advantages": (c_int32, [Handle, c_float_p, c_int64_p, c_int64, c_int64_p, c_float_p, Error_p]),
    "aepo_loss_select_regularizer": (c_int32, [Handle, c_float_p, c_int64_p, c_int64, c_int64, c_int32, c_int64_p,
                                               c_size_t, c_int64_p, c_int64_p, Error_p]),
    # controller
    "aepo_controller_mode_name": (c_char_p, [c_int32]),
    "aepo_controller_statistic_name": (c_char_p, [c_int32]),
    "aepo_controller_reason_name": (c_char_p, [c_int32]),
    "aepo_controller_create": (c_int32, [c_char_p, c_size_t, Handle_p, Error_p]),
    "aepo_controller_free": (None, [Handle]),
    "aepo_controller_config_json": (c_int32, [Handle, c_char_p, c_size_t, c_size_t_p, Error_p]),
    "aepo_controller_decision": (c_int32, [Handle, CDecision_p, Error_p]),
    "aepo_controller_step": (c_int32, [Handle, c_int32, c_double, c_int64, CDecision_p, Error_p]),
    "aepo_controller_step_sums": (c_int32, [Handle, c_int32, c_double, c_int64, c_int64, CDecision_p, Error_p]),
    "aepo_controller_step_metrics": (c_int32, [Handle, c_double_p, c_size_t, c_int64, CDecision_p, Error_p]),
    "aepo_controller_state_json": (c_int32, [Handle, c_char_p, c_size_t, c_size_t_p, Error_p]),
    "aepo_controller_restore": (c_int32, [Handle, c_char_p, c_size_t, Error_p]),
    "aepo_controller_history_count": (c_int32, [Handle, c_int64_p, Error_p]),
    "aepo_controller_history": (c_int32, [Handle, c_int64, CDecision_p, Error_p]),
    # logits kernels
    "aepo_logits_inputs_init": (c_int32, [LogitsInputs_p, c_size_t, Error_p]),
    "aepo_logits_stats": (c_int32, [LogitsInputs_p, c_float_p, c_float_p, c_double_p, c_float_p,
                                    c_double_p, c_double_p, c_int64_p, Error_p]),
    "aepo_logits_backward": (c_int32, [LogitsInputs_p, c_double_p, c_float_p, c_float_p, c_float_p,
                                       c_float_p, c_int64, c_int64, Error_p]),
    # @@TABLE kernels@@
    # sampler
    "aepo_sampler_create": (c_int32, [c_char_p, c_size_t, Handle_p, Error_p]),
    "aepo_sampler_free": (None, [Handle]),
    "aepo_sampler_config_json": (c_int32, [Handle, c_char_p, c_size_t, c_size_t_p, Error_p]),
    "aepo_sampler_sample": (c_int32, [Handle, c_float_p, c_int64, c_int64, c_int64, c_int64, c_int64, c_int64,
                                      c_double_p, c_int32_p, c_float_p, c_float_p, c_int32_p, Error_p]),
    # @@TABLE fused@@
    # @@TABLE sampler@@
    # fused head
    "aepo_fused_head_inputs_init": (c_int32, [FusedHeadInputs_p, c_size_t, Error_p]),
    "aepo_fused_head_create": (c_int32, [c_char_p, c_size_t, Handle_p, Error_p]),
    "aepo_fused_head_free": (None, [Handle]),
    "aepo_fused_head_config_json": (c_int32, [Handle, c_char_p, c_size_t, c_size_t_p, Error_p]),
    "aepo_fused_head_forward": (c_int32, [Handle, FusedHeadInputs_p, c_float_p, c_float_p, c_double_p, Error_p]),
    "aepo_fused_head_backward": (c_int32, [Handle, FusedHeadInputs_p, c_double_p, c_float_p, c_float_p, c_float_p,
                                           c_float_p, c_float_p, c_float_p, Error_p]),
    "aepo_fused_head_loss_and_grad": (c_int32, [Handle, Handle, FusedHeadInputs_p, LossInputs_p, c_double_p,
                                                c_float_p, c_float_p, c_float_p, c_double_p, c_size_t,
                                                c_float_p, c_float_p, Error_p]),
}


def _candidates():
    env = os.environ.get("AEPO_LIB_PATH")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libaepo.so", f"libaepo.so.{ABI_VERSION}"):
        yield os.path.join(here, name)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    yield os.path.join(repo, "build", "lib", f"libaepo.so.{ABI_VERSION}")
    found = ctypes.util.find_library("aepo")
    if found:
        yield found


_AVX512_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _openblas_loaded():
    try:
        with open("/proc/self/maps") as f:
            return any("libopenblas" in line for line in f)
    except OSError:
        return False


def choose_openblas_core(environ=os.environ, flags=None, loaded=None):
    """Picks OpenBLAS's kernels before the library is loaded, so that the fused head runs at
    the speed of the CPU it is on.

    OpenBLAS chooses its core when it is loaded, from a CPU table that older releases (the
    0.3.21 of Debian 12, for one) do not extend to current AVX-512 servers: they fall back to
    the SSE3 ``Prescott`` kernels, and cblas_sgemm runs 3.5-5x slower than with ``SkylakeX``
    (docs/FUSED.md). On a CPU whose Linux flags show AVX-512 (F, CD, BW, DQ, VL, which the
    kernel lists only when the OS saves the registers) this sets OPENBLAS_CORETYPE=SkylakeX,
    unless the variable is already set, AEPO_KEEP_OPENBLAS_CORETYPE is set, or OpenBLAS is
    already in the process (then it is too late, and ``runtime_info()`` warns). Returns the
    core it set, or None."""
    if "OPENBLAS_CORETYPE" in environ or environ.get("AEPO_KEEP_OPENBLAS_CORETYPE"):
        return None
    if not _AVX512_FLAGS <= (_cpu_flags() if flags is None else flags):
        return None
    if _openblas_loaded() if loaded is None else loaded:
        return None
    environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    return "SkylakeX"


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (missing)")
            continue
        try:
            # An absolute path: a bare name would search the loader path, not this folder.
            return ctypes.CDLL(os.path.abspath(path) if os.sep in path else path), path
        except OSError as e:
            tried.append(f"{path} ({e})")
    raise ImportError("aepo: cannot load libaepo; set AEPO_LIB_PATH or run `make`. Tried: " + "; ".join(tried))


# The OpenBLAS core this import set (None: it left OPENBLAS_CORETYPE alone).
openblas_core_set = choose_openblas_core()
lib, lib_path = _load()

for _name, (_res, _args) in _TABLE.items():
    try:
        _fn = getattr(lib, _name)
    except AttributeError:
        raise ImportError(f"aepo: {lib_path} has no symbol {_name}; the library is older than this binding") from None
    _fn.restype = _res
    _fn.argtypes = _args

_abi = lib.aepo_abi_version()
if _abi != ABI_VERSION:
    raise ImportError(f"aepo: {lib_path} has ABI {_abi}, this binding needs ABI {ABI_VERSION}")

version = lib.aepo_version_string().decode()


def _check_statuses():
    """The exception table of errors.py maps exactly the statuses the library names."""
    from . import errors

    for status, cls in errors._BY_STATUS.items():
        name = lib.aepo_status_name(status).decode()
        if name != cls.c_name:
            raise ImportError(f"aepo: {lib_path} calls status {status} {name}, this binding expects {cls.c_name}")
    status = max(errors._BY_STATUS) + 1
    name = lib.aepo_status_name(status).decode()
    if name != "AEPO_ERR_UNKNOWN":
        raise ImportError(f"aepo: {lib_path} has status {status} ({name}), which this binding does not map")


_check_statuses()


INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def int64(v, name):
    """``v`` (already an int) checked to fit the C int64_t it is passed as: ctypes would
    silently keep only its low 64 bits (2**64 + 1 would arrive as 1)."""
    if not INT64_MIN <= v <= INT64_MAX:
        raise InvalidValueError(f"{name}: {v} does not fit in a 64-bit integer", argument=name)
    return v


def call(fn, *args):
    """Calls a status-returning function with a fresh aepo_error appended; raises on failure."""
    err = Error()
    status = fn(*args, ctypes.byref(err))
    if status != 0:
        raise_error(status, err)
    return status


def raise_error(status, err):
    """Raises the exception for a failed call's status and filled-in aepo_error."""
    raise error_for_status(status, err.message.decode("utf-8", "replace"),
                           err.argument.decode("utf-8", "replace"), err.index)


def read_text(fn, *args):
    """Calls a function that writes text under the size-query rule and returns the text."""
    n = c_size_t(0)
    call(fn, *args, None, 0, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value + 1)
    call(fn, *args, buf, n.value + 1, ctypes.byref(n))
    return buf.value.decode()


def status_name(status):
    return lib.aepo_status_name(status).decode()


# The versioned argument structs and the library function that initialises each one.
_INIT = {
    LossInputs: lib.aepo_loss_inputs_init,
    LogitsInputs: lib.aepo_logits_inputs_init,
    FusedHeadInputs: lib.aepo_fused_head_inputs_init,
}


def init(struct_type):
    """A new ``struct_type`` (LossInputs, LogitsInputs or FusedHeadInputs) as its
    ``aepo_*_inputs_init`` leaves it: zeroed, struct_size set, the library's defaults filled."""
    s = struct_type()
    call(_INIT[struct_type], ctypes.byref(s), ctypes.sizeof(struct_type))
    return s


def _check_structs():
    """Each versioned struct's mirror is accepted by its init function (a struct_size below the
    library's first version fails there) and the defaults the library writes land in the fields
    this binding reads them from (a field at the wrong offset fails here, not in a call)."""
    expected = {
        LossInputs: {"B": 0, "L": 0, "reg_alpha": -1.0, "global_tokens": -1, "global_seqs": -1,
                     "global_reg_tokens": -1, "dp_size": 1, "step": 0, "adv_per_token": 0, "reserved": 0},
        LogitsInputs: {"B": 0, "L": 0, "V": 0, "temperature": 1.0, "threads": 1},
        FusedHeadInputs: {"N": 0, "D": 0, "V": 0},
    }
    for cls, fields in expected.items():
        name = _INIT[cls].__name__
        try:
            s = init(cls)
        except Exception as e:
            raise ImportError(f"aepo: {lib_path} refuses the {ctypes.sizeof(cls)}-byte {cls.__name__} "
                              f"({name}: {e})") from None
        got = {k: getattr(s, k) for k in fields}
        if s.struct_size != ctypes.sizeof(cls) or got != fields:
            raise ImportError(f"aepo: {name} of {lib_path} fills {got} (struct_size {s.struct_size}); this "
                              f"binding's {cls.__name__} expects {fields} (struct_size {ctypes.sizeof(cls)})")
        if cls is LogitsInputs and not (s.stride_b < 0 and s.stride_l < 0):
            raise ImportError(f"aepo: {name} of {lib_path} sets strides ({s.stride_b}, {s.stride_l}); this "
                              "binding expects the negative 'contiguous' default")


_check_structs()


class NativeHandle:
    """The lifetime every handle class shares: created from a whole config document by
    ``aepo_<kind>_create``, released once by ``aepo_<kind>_free``, usable as a context
    manager, and ``close()`` idempotent. Subclasses set ``_kind``."""

    _kind = ""

    def __init__(self, cfg=None):
        from .config import config_bytes
        self._h = None
        data = config_bytes(cfg)
        h = Handle()
        call(getattr(lib, f"aepo_{self._kind}_create"), data, len(data), ctypes.byref(h))
        self._h = h
        self._config = json.loads(read_text(getattr(lib, f"aepo_{self._kind}_config_json"), h))

    def close(self):
        """Releases the handle; calling it again does nothing."""
        h, self._h = getattr(self, "_h", None), None
        if h is not None and h.value:
            getattr(lib, f"aepo_{self._kind}_free")(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def _handle(self):
        if self._h is None:
            raise InvalidValueError(f"{type(self).__name__}: the handle is closed", argument="self")
        return self._h

    @property
    def config(self):
        """The effective config the handle runs with: the whole normalised document (a copy)."""
        return json.loads(json.dumps(self._config))
