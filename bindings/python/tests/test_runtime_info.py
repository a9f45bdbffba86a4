"""aepo.runtime_info(): valid JSON with every field, the BLAS core and the warning for a core
below the CPU, and the OpenBLAS core the binding picks before the library loads."""
import json
import os
import subprocess
import sys

import pytest

import aepo
from aepo import _lib

_CHILD = "import json, aepo; print(json.dumps(aepo.runtime_info()))"


def _child_info(**env_changes):
    """runtime_info() from a fresh interpreter, so OpenBLAS loads under the given environment."""
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_every_field_is_present_and_typed():
    info = aepo.runtime_info()
    assert info["version"] == aepo.__version__ and info["abi"] == aepo.ABI_VERSION
    cpu = info["cpu"]
    assert set(cpu) == {"vendor", "brand", "features", "os_saves_ymm", "os_saves_zmm", "level"}
    assert isinstance(cpu["features"], list) and all(isinstance(f, str) for f in cpu["features"])
    assert isinstance(cpu["os_saves_ymm"], bool) and isinstance(cpu["os_saves_zmm"], bool)
    assert cpu["level"] in ("SSE", "AVX", "AVX2", "AVX-512")
    assert set(info["kernels"]) == {"logits", "sampler", "fused_head", "loss"}
    assert all(isinstance(v, str) and v for v in info["kernels"].values())
    blas = info["blas"]
    assert set(blas) == {"library", "openblas", "core", "core_level", "config", "threads"}
    assert blas["library"].endswith(".so") or ".so." in blas["library"]
    assert isinstance(info["warnings"], list)
    assert set(info["python"]) == {"openblas_coretype", "set_by_aepo"}


def test_the_c_text_is_json_under_the_size_query_rule():
    n = _lib.c_size_t()
    assert _lib.lib.aepo_runtime_info(None, 0, _lib.ctypes.byref(n), None) == 0
    buf = _lib.ctypes.create_string_buffer(n.value + 1)
    assert _lib.lib.aepo_runtime_info(buf, n.value + 1, _lib.ctypes.byref(n), None) == 0
    assert len(buf.value) == n.value
    json.loads(buf.value)
    small = _lib.ctypes.create_string_buffer(8)
    assert _lib.lib.aepo_runtime_info(small, 8, _lib.ctypes.byref(n), None) == 6  # AEPO_ERR_BUFFER_TOO_SMALL
    assert small.value == b""


def test_cpu_level_matches_the_kernel_flags():
    info = aepo.runtime_info()
    flags = _lib._cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    have = set(info["cpu"]["features"])
    for name in ("avx2", "fma", "avx512f", "avx512bw"):
        assert (name in have) == (name in flags), name
    if _lib._AVX512_FLAGS <= flags:
        assert info["cpu"]["level"] == "AVX-512"
    elif {"avx2", "fma"} <= flags:
        assert info["cpu"]["level"] == "AVX2"


@pytest.mark.skipif(not aepo.runtime_info()["blas"]["openblas"], reason="the BLAS is not OpenBLAS")
def test_a_low_openblas_core_is_reported_with_the_fix():
    info = _child_info(OPENBLAS_CORETYPE="Prescott")
    assert info["blas"]["core"] == "Prescott" and info["blas"]["core_level"] == "SSE"
    assert info["python"] == {"openblas_coretype": "Prescott", "set_by_aepo": None}
    if info["cpu"]["level"] == "SSE":
        assert info["warnings"] == []
    else:
        (w,) = info["warnings"]
        assert "Prescott" in w and "OPENBLAS_CORETYPE=" in w


@pytest.mark.skipif(not aepo.runtime_info()["blas"]["openblas"], reason="the BLAS is not OpenBLAS")
def test_the_binding_picks_the_avx512_core_when_nothing_is_set():
    info = _child_info(OPENBLAS_CORETYPE=None, AEPO_KEEP_OPENBLAS_CORETYPE=None)
    if info["cpu"]["level"] == "AVX-512":
        assert info["python"]["set_by_aepo"] == "SkylakeX"
        assert info["blas"]["core"] == "SkylakeX" and info["warnings"] == []
    else:
        assert info["python"]["set_by_aepo"] is None
    kept = _child_info(OPENBLAS_CORETYPE=None, AEPO_KEEP_OPENBLAS_CORETYPE="1")
    assert kept["python"] == {"openblas_coretype": None, "set_by_aepo": None}


def test_choose_openblas_core_rules():
    avx512 = set(_lib._AVX512_FLAGS) | {"avx2", "fma"}
    env = {}
    assert _lib.choose_openblas_core(env, flags=avx512, loaded=False) == "SkylakeX"
    assert env == {"OPENBLAS_CORETYPE": "SkylakeX"}
    env = {"OPENBLAS_CORETYPE": "Haswell"}
    assert _lib.choose_openblas_core(env, flags=avx512, loaded=False) is None and env["OPENBLAS_CORETYPE"] == "Haswell"
    env = {"AEPO_KEEP_OPENBLAS_CORETYPE": "1"}
    assert _lib.choose_openblas_core(env, flags=avx512, loaded=False) is None and "OPENBLAS_CORETYPE" not in env
    env = {}
    assert _lib.choose_openblas_core(env, flags=avx512, loaded=True) is None and env == {}
    assert _lib.choose_openblas_core(env, flags={"avx2", "fma", "avx512f"}, loaded=False) is None and env == {}
