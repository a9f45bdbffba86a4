"""Moving tensors between PyTorch and the library (docs/TORCH.md, "Tensors and devices").

- Every tensor of one call must live on one device; a ``meta`` tensor holds no data and is
  refused (DeviceError, naming the argument).
- Float inputs reach the library as float32 C-contiguous arrays: a CPU float32 contiguous
  tensor is passed without a copy; any other (CUDA, bf16, fp16, float64, strided) with one
  copy, made by a single ``Tensor.to`` call.
- Results go back to the input's device. Gradients take the dtype of the tensor they belong
  to; forward values are float32 (float64 for float64 input).
"""
import numpy as np
import torch

from ..errors import DeviceError, DTypeError, InvalidValueError, ShapeError

_CPU = torch.device("cpu")


def describe(x):
    return f"torch.{str(x.dtype).split('.')[-1]}" if isinstance(x, torch.Tensor) else type(x).__name__


def common_device(*named):
    """The device shared by the tensors among ``(name, value)`` pairs (CPU if there are none).

    The first tensor fixes the device; a later one elsewhere is a DeviceError naming it."""
    device = first = None
    for name, x in named:
        if not isinstance(x, torch.Tensor):
            continue
        if x.device.type == "meta":
            raise DeviceError(f"{name}: is a meta tensor, which holds no data; pass a tensor with values "
                              "(CPU or CUDA)", argument=name)
        if device is None:
            device, first = x.device, name
        elif x.device != device:
            raise DeviceError(f"{name}: is on {x.device}, but {first} is on {device}; every tensor of one call "
                              "must live on one device", argument=name)
    return _CPU if device is None else device


def require_tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise DTypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}", argument=name)
    return x


def require_float(x, name):
    """A floating tensor (float16, bfloat16, float32, float64)."""
    require_tensor(x, name)
    if not x.is_floating_point():
        raise DTypeError(f"{name}: expected a floating tensor (float32, float64, bfloat16 or float16), "
                         f"got {describe(x)}", argument=name)
    return x


def no_grad_input(x, name, why="the library gives no gradient with respect to it"):
    """Refuses a tensor that requires grad where the result cannot depend on it differentiably."""
    if isinstance(x, torch.Tensor) and x.requires_grad:
        raise InvalidValueError(f"{name}: requires grad, but {why}; pass {name}.detach() (a silent zero "
                                "gradient would be wrong)", argument=name)
    return x


def float_host(x, name):
    """``x`` as a float32 C-contiguous numpy array (zero-copy when it already is one on the CPU).

    Non-tensors are returned unchanged: the numpy layer converts array-likes itself."""
    if x is None or not isinstance(x, torch.Tensor):
        return x
    if x.dtype == torch.bool or x.is_complex():
        raise DTypeError(f"{name}: expected a real numeric tensor, got {describe(x)}", argument=name)
    t = x.detach()
    if t.device != _CPU or t.dtype != torch.float32 or not t.is_contiguous():
        t = t.to(device=_CPU, dtype=torch.float32, memory_format=torch.contiguous_format)
    return t.resolve_conj().resolve_neg().numpy()


def index_host(x, name):
    """An integer (or bool) tensor as a numpy array on the CPU (ids and masks are small)."""
    if x is None or not isinstance(x, torch.Tensor):
        return x
    if x.is_floating_point() or x.is_complex():
        raise DTypeError(f"{name}: expected a bool or integer tensor, got {describe(x)}", argument=name)
    return x.detach().to(_CPU).resolve_neg().numpy()


def scalar(x, name, kind=float):
    """A Python number from a number or a one-element tensor."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ShapeError(f"{name}: expected a number or a one-element tensor, got shape {tuple(x.shape)}",
                             argument=name)
        if x.device.type == "meta":
            raise DeviceError(f"{name}: is a meta tensor, which holds no data", argument=name)
        x = x.item()
    if isinstance(x, (bool, np.bool_)) or isinstance(x, (str, bytes)):
        raise DTypeError(f"{name}: expected a number, got {type(x).__name__}", argument=name)
    try:
        return kind(x) if kind is float else _as_int(x, name)
    except (TypeError, ValueError):
        raise DTypeError(f"{name}: expected a number, got {type(x).__name__}", argument=name) from None


def _as_int(x, name):
    if isinstance(x, float) and not x.is_integer():
        raise InvalidValueError(f"{name}: expected an integer, got {x}", argument=name)
    return int(x)


def value_dtype(dtype):
    """The dtype of forward results for inputs of ``dtype``: float64 stays, the rest is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def to_torch(a, device, dtype=None):
    """A numpy result as a tensor on ``device`` (in ``dtype`` when given), one copy at most."""
    if a is None:
        return None
    t = torch.from_numpy(a)
    if dtype is None:
        dtype = t.dtype
    if t.device == device and t.dtype == dtype:
        return t
    return t.to(device=device, dtype=dtype)


def scaled_grad(g, grad_out, device, dtype):
    """``g * grad_out`` (g a CPU float32 tensor from the library) on ``device`` in ``dtype``."""
    g = g.to(device)
    go = grad_out.to(device)
    return (g * go).to(dtype)


def out_buffer(x, name, shape):
    """A caller's output tensor (added into or written in place) as a numpy view of its memory.

    It must be a CPU float32 C-contiguous tensor that does not require grad (docs/API.md:
    outputs and in-place buffers are float32 and C-contiguous, else ShapeError)."""
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}", argument=name)
    if x.device.type == "meta":
        raise DeviceError(f"{name}: is a meta tensor, which holds no data", argument=name)
    if x.device != _CPU:
        raise DeviceError(f"{name}: output buffers must be CPU tensors (the library writes into their memory), "
                          f"got one on {x.device}; omit {name} and add the returned gradient yourself",
                          argument=name)
    if x.dtype != torch.float32:
        raise ShapeError(f"{name}: output buffers must be float32, got {describe(x)}", argument=name)
    if not x.is_contiguous():
        raise ShapeError(f"{name}: output buffers must be C-contiguous, got strides {tuple(x.stride())} for "
                         f"shape {tuple(x.shape)}", argument=name)
    if tuple(x.shape) != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}", argument=name)
    no_grad_input(x, name, why="it is an output buffer the library writes into")
    if x.is_conj() or x.is_neg():
        raise ShapeError(f"{name}: output buffers must not be lazy negated or conjugated views", argument=name)
    return x.numpy()
