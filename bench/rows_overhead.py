"""Per-call overhead of a trivial C call through ctypes, against a libc call of the same shape."""
import ctypes
import ctypes.util

from benchlib import Row


def rows(ctx):
    from aepo import _lib
    fn = _lib.lib.aepo_version_number
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    labs = libc.labs
    labs.restype = ctypes.c_long
    labs.argtypes = [ctypes.c_long]
    n = 20000

    def lib_calls():
        for _ in range(n):
            fn()

    def peer_calls():
        for _ in range(n):
            labs(1)

    return [Row(name=f"ctypes call overhead: aepo_version_number() x{n}", lib=lib_calls, peer=peer_calls,
                peer_name="libc labs(1) via ctypes")]
