"""docs/PYTHON.md, the reference of the Python API, generated from the signatures and
docstrings of every name in ``aepo.__all__``, ``aepo.torch.__all__`` and
``aepo.torch.distributed.__all__``. Every public class, function, method and property must
have a docstring, and every exported value a line in VALUES below; otherwise this fails.

usage: python scripts/python_api_reference.py [--check]
  (needs the library: AEPO_LIB_PATH, and PYTHONPATH=bindings/python; `make test` runs the
  check through bindings/python/tests/test_api_reference.py)
"""
import inspect
import os
import sys

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "PYTHON.md")

# Exported values have no docstring of their own.
VALUES = {
    "aepo.__version__": "the library's version string, read from the loaded library",
    "aepo.ABI_VERSION": "the ABI this binding was written for; import fails on another",
    "aepo.library_path": "the path of the loaded libaepo",
    "aepo.torch.AEPO_LOSS_MODE": "the name under which `verl_policy_loss` registers with verl",
}

INTRO = """# The Python API

Generated from the docstrings by `scripts/python_api_reference.py`; `make test` fails when
this page is stale. `docs/API.md` has the contract these calls follow (shapes, dtypes,
errors), and `docs/TRAINING-STEP.md` shows one training step call by call.

Every handle class is a context manager with an idempotent `close()` and belongs to one
thread at a time. A config is a `dict`, a JSON `str`, or `None` for the defaults.
"""


def _doc(obj, where):
    doc = inspect.getdoc(obj)
    if not doc:
        raise SystemExit(f"python_api_reference: {where} has no docstring")
    return doc


def _sig(obj):
    try:
        s = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    if " at 0x" in s:
        raise SystemExit(f"python_api_reference: the signature {s} shows an address")
    return s


def _own_members(cls):
    """Public methods and properties the class itself defines (plus __init__'s signature)."""
    out = []
    for name, v in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(v, property):
            out.append((name, "property", v.fget))
        elif isinstance(v, (staticmethod, classmethod)):
            out.append((name, "method", v.__func__))
        elif inspect.isfunction(v):
            out.append((name, "method", v))
    return out


def _is_namedtuple(cls):
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def _render_module(modname, mod, lines):
    lines.append(f"## `{modname}`\n")
    for name in mod.__all__:
        obj = getattr(mod, name)
        qual = f"{modname}.{name}"
        if inspect.ismodule(obj):
            lines.append(f"### `{qual}` (module)\n")
            lines.append(_doc(obj, qual).split("\n\n")[0] + f" Its names are listed under `{obj.__name__}` below.\n")
        elif inspect.isclass(obj):
            if _is_namedtuple(obj):
                lines.append(f"### `{qual}` (named tuple)\n")
                lines.append(f"Fields: {', '.join(f'`{f}`' for f in obj._fields)}.\n")
                own = obj.__doc__ if obj.__doc__ and not obj.__doc__.startswith(f"{name}(") else None
                if own:
                    lines.append(inspect.cleandoc(own) + "\n")
                members = [m for m in _own_members(obj) if m[0] not in obj._fields]
            else:
                bases = [b.__name__ for b in obj.__bases__
                         if b is not object and not b.__name__.startswith("_") and not b.__module__.startswith("aepo._")]
                kind = "exception" if issubclass(obj, BaseException) else "class"
                head = f"### `{qual}{_sig(obj) if kind == 'class' else ''}` ({kind}"
                lines.append(head + (f"; subclasses {', '.join(f'`{b}`' for b in bases)})" if bases else ")") + "\n")
                lines.append(_doc(obj, qual) + "\n")
                members = _own_members(obj)
            for mname, mkind, f in members:
                where = f"{qual}.{mname}"
                if mkind == "property":
                    lines.append(f"- **`{mname}`** (property): " + _doc(f, where).replace("\n", " ") + "\n")
                else:
                    lines.append(f"#### `{name}.{mname}{_sig(f)}`\n")
                    lines.append(_doc(f, where) + "\n")
        elif callable(obj):
            lines.append(f"### `{qual}{_sig(obj)}`\n")
            lines.append(_doc(obj, qual) + "\n")
        else:
            if qual not in VALUES:
                raise SystemExit(f"python_api_reference: the exported value {qual} is not described in VALUES")
            lines.append(f"### `{qual}` (value)\n")
            lines.append(VALUES[qual] + ".\n")


def render():
    import aepo
    import aepo.torch
    import aepo.torch.distributed

    lines = [INTRO]
    for modname, mod in (("aepo", aepo), ("aepo.torch", aepo.torch),
                         ("aepo.torch.distributed", aepo.torch.distributed)):
        _render_module(modname, mod, lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv):
    text = render()
    if "--check" in argv:
        current = open(PAGE).read() if os.path.exists(PAGE) else ""
        if current != text:
            print("docs/PYTHON.md is stale: run python scripts/python_api_reference.py", file=sys.stderr)
            return 1
        return 0
    with open(PAGE, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
