"""What the library runs on: ``aepo.runtime_info()``."""
import json
import os

from . import _lib


def runtime_info():
    """The machine and setup this process runs on, as a dict (``aepo_runtime_info``):

    - ``version``, ``abi``: the library's;
    - ``cpu``: ``vendor``, ``brand``, ``features`` (instruction sets such as ``"avx2"``,
      ``"avx512f"``), ``os_saves_ymm`` / ``os_saves_zmm`` and ``level`` (``"SSE"``, ``"AVX"``,
      ``"AVX2"`` or ``"AVX-512"``);
    - ``kernels``: the path each kernel family runs (``logits``, ``sampler``, ``fused_head``,
      ``loss``);
    - ``blas``: ``library``, ``openblas``, ``core``, ``core_level``, ``config``, ``threads``;
    - ``warnings``: each a setup slower than the machine allows, with the fix;
    - ``python``: ``openblas_coretype`` (the environment variable as OpenBLAS saw it, or None)
      and ``set_by_aepo`` (the core this binding chose at import, or None).
    """
    info = json.loads(_lib.read_text(_lib.lib.aepo_runtime_info))
    info["python"] = {"openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
                      "set_by_aepo": _lib.openblas_core_set}
    return info
