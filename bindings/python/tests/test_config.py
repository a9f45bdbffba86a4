import json
import os
import re

import pytest

import aepo
from aepo import _lib


def _header_version():
    """(major, minor, patch, abi) as include/aepo.h writes them, the one place they live."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
    text = open(os.path.join(root, "include", "aepo.h")).read()
    get = lambda name: int(re.search(rf"^#define AEPO_{name} (\d+)$", text, flags=re.M).group(1))
    return get("VERSION_MAJOR"), get("VERSION_MINOR"), get("VERSION_PATCH"), get("ABI_VERSION")


def test_version_and_abi_come_from_the_header():
    major, minor, patch, abi = _header_version()
    assert aepo.__version__ == f"{major}.{minor}.{patch}"
    assert _lib.lib.aepo_abi_version() == aepo.ABI_VERSION == abi
    assert _lib.lib.aepo_version_number() == major * 10000 + minor * 100 + patch
    # The package metadata states the same version.
    pyproject = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")).read()
    assert re.search(r'^version = "([^"]+)"$', pyproject, flags=re.M).group(1) == aepo.__version__


def test_every_library_status_has_its_exception():
    from aepo import errors

    for status, cls in errors._BY_STATUS.items():
        assert _lib.status_name(status) == cls.c_name
        assert isinstance(errors.error_for_status(status, "m"), cls)
    assert _lib.status_name(max(errors._BY_STATUS) + 1) == "AEPO_ERR_UNKNOWN"
    assert _lib.status_name(4) == "AEPO_ERR_CONFIG"
    assert _lib.status_name(99) == "AEPO_ERR_UNKNOWN"


def test_default_config_matches_api_defaults():
    d = aepo.default_config()
    assert d["schema_version"] == 1
    assert d["loss"]["clip_ratio_low"] == 0.2 and d["loss"]["clip_ratio_c"] == 3.0
    assert d["regularizer"]["alpha"] == 60 / 640
    assert d["sampler"]["top_p"] == 1.0
    assert d["fused"] == {"chunk_n": 128, "chunk_v": 8192, "temperature": 1.0, "threads": 1}
    assert d["controller"]["schedule"]["points"] == []


def test_round_trip_is_byte_identical():
    text = aepo.default_config_json()
    n = _lib.c_size_t(0)
    again = _lib.read_text(_lib.lib.aepo_config_normalize, text.encode(), len(text))
    assert again == text
    # keys sorted at every level
    def check_sorted(o):
        if isinstance(o, dict):
            assert list(o) == sorted(o)
            for v in o.values():
                check_sorted(v)
    check_sorted(json.loads(text))


def test_partial_documents_fill_defaults():
    full = aepo.validate_config({"controller": {"target": 0.75}})
    assert full["controller"]["target"] == 0.75
    assert full["controller"]["t_high"] == 1.2
    assert aepo.validate_config(None) == aepo.default_config()
    assert aepo.validate_config("") == aepo.default_config()
    pts = [{"step": 0, "target": 0.5}, {"step": 100, "target": 0.8}]
    got = aepo.validate_config({"controller": {"schedule": {"kind": "piecewise", "points": pts}}})
    assert got["controller"]["schedule"]["points"] == pts


@pytest.mark.parametrize("cfg, path, needle", [
    ({"loss": {"bogus": 1}}, "loss.bogus", "unknown key"),
    ('{"loss": {"threads": 1, "threads": 2}}', "loss.threads", "duplicate key"),
    ({"controller": {"mode": 3}}, "controller.mode", "got the integer 3"),
    ({"loss": {"threads": 2.0}}, "loss.threads", "integer keys do not accept reals"),
    ({"controller": {"t_high": 0}}, "controller.t_high", "sampler.greedy"),
    ({"sampler": {"top_p": 1.5}}, "sampler.top_p", "out of range"),
    ('{"loss": {"clip_ratio_c": }', "loss.clip_ratio_c", "line 1, column 27"),
    ("[1, 2]", "config", "top level must be a JSON object"),
    ({"schema_version": 2}, "schema_version", "unsupported version 2"),
    ({"controller": {"adaptive": {"t_min": 2.5}}}, "controller.adaptive.t_max", "t_min"),
    ({"loss": {"loss_agg_mode": "seq-mean-token-sum-norm"}}, "loss.loss_scale_factor", "needs loss_scale_factor > 0"),
    ({"controller": {"schedule": {"kind": "piecewise", "points": [{"step": 5, "target": 0.5},
                                                                  {"step": 5, "target": 0.6}]}}},
     "controller.schedule.points[1].step", "strictly increasing"),
    ({"loss": {"policy_loss": "ppo"}}, "loss.policy_loss", 'unknown value "ppo"'),
    ({"loss": "vanilla"}, "loss", "expected an object"),
])
def test_bad_configs_name_the_path(cfg, path, needle):
    with pytest.raises(aepo.ConfigError) as ei:
        aepo.validate_config(cfg)
    e = ei.value
    assert isinstance(e, ValueError)
    assert e.argument == path, str(e)
    assert needle in str(e), str(e)
    assert e.status == 4


def test_distinct_messages():
    cases = [{"loss": {"bogus": 1}}, '{"a": 1, "a": 2}', {"loss": {"threads": "x"}}, {"loss": {"threads": 2.5}},
             {"loss": {"threads": 0}}, "{", "[]", {"schema_version": 3}]
    msgs = set()
    for c in cases:
        with pytest.raises(aepo.ConfigError) as ei:
            aepo.validate_config(c)
        msgs.add(str(ei.value))
    assert len(msgs) == len(cases)


def test_non_json_python_values_are_config_errors():
    with pytest.raises(aepo.ConfigError):
        aepo.validate_config({"controller": {"target": float("nan")}})
    with pytest.raises(aepo.ConfigError):
        aepo.validate_config(42)


def test_exception_hierarchy():
    assert issubclass(aepo.ShapeError, ValueError)
    assert issubclass(aepo.InvalidValueError, ValueError)
    assert issubclass(aepo.NonFiniteError, FloatingPointError)
    assert issubclass(aepo.DTypeError, TypeError) and issubclass(aepo.DTypeError, aepo.AepoError)
