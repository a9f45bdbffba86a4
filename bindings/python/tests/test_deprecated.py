"""The names of 0.1 still resolve for one release: each returns the current object and warns
with a DeprecationWarning that names the current name; none is exported in ``__all__``."""
import importlib

import pytest

import aepo

# (module, old name, current name, the spelling the warning must give)
ALIASES = [
    ("aepo", "PolicyLoss", "Loss", "aepo.Loss"),
    ("aepo", "EntropyController", "Controller", "aepo.Controller"),
    ("aepo", "FusedLMHead", "FusedHead", "aepo.FusedHead"),
    ("aepo.loss", "PolicyLoss", "Loss", "aepo.Loss"),
    ("aepo.controller", "EntropyController", "Controller", "aepo.Controller"),
    ("aepo.controller", "STATISTIC_EXACT", "STATISTIC_ENTROPY", "aepo.controller.STATISTIC_ENTROPY"),
    ("aepo.fused", "FusedLMHead", "FusedHead", "aepo.FusedHead"),
]
TORCH_ALIASES = [
    ("aepo.torch", "FusedLMHead", "FusedHead", "aepo.torch.FusedHead"),
    ("aepo.torch", "FusedPolicyLoss", "FusedHeadLossResult", "aepo.torch.FusedHeadLossResult"),
    ("aepo.torch.fused", "FusedLMHead", "FusedHead", "aepo.torch.FusedHead"),
    ("aepo.torch.fused", "FusedPolicyLoss", "FusedHeadLossResult", "aepo.torch.FusedHeadLossResult"),
]


def _check(modname, old, new, spelling):
    mod = importlib.import_module(modname)
    with pytest.warns(DeprecationWarning) as record:
        obj = getattr(mod, old)
    assert obj is getattr(mod, new)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"{modname}.{old}" in message and spelling in message, message
    assert record[0].filename == __file__  # the warning points at the code that used the name
    assert old not in getattr(mod, "__all__", ())


@pytest.mark.parametrize("modname, old, new, spelling", ALIASES)
def test_old_names_warn_and_are_the_new_objects(modname, old, new, spelling):
    _check(modname, old, new, spelling)


@pytest.mark.parametrize("modname, old, new, spelling", TORCH_ALIASES)
def test_old_torch_names_warn_and_are_the_new_objects(modname, old, new, spelling):
    pytest.importorskip("torch")
    _check(modname, old, new, spelling)


def test_the_old_names_still_work():
    with pytest.warns(DeprecationWarning):
        cls = aepo.PolicyLoss
    with cls() as loss:
        assert isinstance(loss, aepo.Loss)
    with pytest.warns(DeprecationWarning):
        from aepo import EntropyController
    with EntropyController() as controller:
        assert controller.decision().step == 0


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchName"):
        aepo.NoSuchName  # noqa: B018
    assert not hasattr(aepo, "LossHandle")
    assert "Loss" in aepo.__all__ and "Controller" in aepo.__all__ and "FusedHead" in aepo.__all__
