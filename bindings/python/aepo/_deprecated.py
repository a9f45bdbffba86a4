"""Old public names kept for one release: reading one from its module returns the current
object and emits a DeprecationWarning that names the current one. They are not in any
``__all__``."""
import importlib
import warnings


def module_getattr(module_name, aliases):
    """A module-level ``__getattr__`` for ``module_name`` that resolves the deprecated names of
    ``aliases`` (old name -> (module defining the new object, new name, public spelling))."""

    def __getattr__(name):
        try:
            where, new, spelling = aliases[name]
        except KeyError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
        warnings.warn(f"{module_name}.{name} is deprecated since 0.2 and will be removed; use {spelling}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(where), new)

    return __getattr__
