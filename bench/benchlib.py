"""Shared pieces for bench rows: the Row record and a context with threads set up."""
import ctypes
import ctypes.util
import os
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Row:
    name: str
    lib: Callable[[], object]
    peer: Optional[Callable[[], object]] = None
    peer_name: str = ""
    inner: int = 1          # calls per timed run (for tiny calls)
    warmup: int = 1
    setup: Optional[Callable[[], None]] = None
    teardown: Optional[Callable[[], None]] = None
    extra: object = None    # dict or callable returning a dict, merged into the result
    notes_keys: tuple = field(default_factory=tuple)


class BenchContext:
    def __init__(self, threads):
        self.threads = threads
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
        import numpy as np
        import aepo
        self.np = np
        self.aepo = aepo
        try:
            import torch
            torch.set_num_threads(threads)
            self.torch = torch
            self.torch_version = torch.__version__
        except ImportError:
            self.torch = None
            self.torch_version = None

    def blas_threads(self):
        """Thread count of the OpenBLAS that libaepo links (read, never set)."""
        try:
            lib = ctypes.CDLL("libopenblas.so.0")
            lib.openblas_get_num_threads.restype = ctypes.c_int
            return lib.openblas_get_num_threads()
        except (OSError, AttributeError):
            return None
