"""The ctypes mirrors in aepo._lib have the layout include/aepo.h gives its structs: the same
size and every field at the same offset, as a C compiler lays them out."""
import ctypes
import os
import shutil
import subprocess

import pytest

from aepo import _lib

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")

MIRRORS = {
    "aepo_error": _lib.Error,
    "aepo_decision": _lib.CDecision,
    "aepo_loss_inputs": _lib.LossInputs,
    "aepo_logits_inputs": _lib.LogitsInputs,
    "aepo_fused_head_inputs": _lib.FusedHeadInputs,
}


def _c_layout(tmp_path):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "aepo.h"', "int main(void) {"]
    for cname, cls in MIRRORS.items():
        lines.append(f'  printf("{cname} sizeof %zu\\n", sizeof({cname}));')
        for field, _ in cls._fields_:
            lines.append(f'  printf("{cname} {field} %zu\\n", offsetof({cname}, {field}));')
    lines += ["  return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", os.path.join(ROOT, "include"), str(src), "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {(name, field): int(v) for name, field, v in (line.split() for line in out.splitlines())}


def test_mirrors_match_the_header(tmp_path):
    c = _c_layout(tmp_path)
    for cname, cls in MIRRORS.items():
        assert ctypes.sizeof(cls) == c[(cname, "sizeof")], cname
        for field, _ in cls._fields_:
            assert getattr(cls, field).offset == c[(cname, field)], f"{cname}.{field}"


@pytest.mark.parametrize("cls", [_lib.LossInputs, _lib.LogitsInputs, _lib.FusedHeadInputs])
def test_init_sets_struct_size(cls):
    s = _lib.init(cls)
    assert s.struct_size == ctypes.sizeof(cls)
