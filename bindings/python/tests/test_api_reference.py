"""docs/PYTHON.md is the reference generated from the docstrings of every exported name
(scripts/python_api_reference.py): it must be current, and generating it fails when a
public class, function, method or property has no docstring."""
import importlib.util
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


def _generator():
    spec = importlib.util.spec_from_file_location("python_api_reference",
                                                  os.path.join(ROOT, "scripts", "python_api_reference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_python_reference_is_current():
    gen = _generator()
    text = gen.render()
    if os.environ.get("AEPO_UPDATE_DOCS") == "1":
        with open(gen.PAGE, "w") as f:
            f.write(text)
    with open(gen.PAGE) as f:
        assert f.read() == text, "docs/PYTHON.md is stale: run python scripts/python_api_reference.py"


def test_every_exported_name_has_an_entry():
    import aepo
    import aepo.torch
    import aepo.torch.distributed

    text = _generator().render()
    for modname, mod in (("aepo", aepo), ("aepo.torch", aepo.torch),
                         ("aepo.torch.distributed", aepo.torch.distributed)):
        for name in mod.__all__:
            assert f"### `{modname}.{name}" in text, f"{modname}.{name} has no entry"
