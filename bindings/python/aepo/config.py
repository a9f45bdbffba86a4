"""The JSON config document (schema_version 1) that every handle is created from."""
import json

from . import _lib
from .errors import ConfigError


def config_bytes(cfg):
    """Encodes ``dict | str | bytes | None`` as the bytes the C API takes (None -> defaults)."""
    if cfg is None:
        return b""
    if isinstance(cfg, (bytes, bytearray)):
        return bytes(cfg)
    if isinstance(cfg, str):
        return cfg.encode("utf-8")
    if isinstance(cfg, dict):
        try:
            # allow_nan=False: NaN is not JSON; say so here rather than send invalid text.
            return json.dumps(cfg, allow_nan=False).encode("utf-8")
        except ValueError as e:
            raise ConfigError(f"config: {e}", argument="config", status=4) from None
        except TypeError as e:
            raise ConfigError(f"config: a value is not JSON-serialisable: {e}", argument="config", status=4) from None
    raise ConfigError(f"config: expected a dict, a JSON string or None, got {type(cfg).__name__}",
                      argument="config", status=4)


def default_config():
    """The default document as a dict."""
    return json.loads(_lib.read_text(_lib.lib.aepo_default_config_json))


def default_config_json():
    """The default document as canonical JSON text."""
    return _lib.read_text(_lib.lib.aepo_default_config_json)


def validate_config(cfg=None):
    """Validates a whole document and returns its normalised form (every key, defaults filled)."""
    data = config_bytes(cfg)
    return json.loads(_lib.read_text(_lib.lib.aepo_config_normalize, data, len(data)))
