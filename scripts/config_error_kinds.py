#!/usr/bin/env python3
"""Checks that the committed config fuzz corpus reaches every documented kind of config error.

    scripts/config_error_kinds.py LIBAEPO.so CORPUS_DIR [--list]

The kinds are the rows of the "Error kinds" table in docs/CONFIG.md. Each corpus document is
validated (aepo_config_validate) and, when valid, given to every create function; each
rejection is classified by its message. Fails when a documented kind has no classifier, when
a rejection matches no kind (a new kind of error that the table should list), or when a kind
is not reached. --list prints the kind of every corpus file.
"""
import ctypes
import os
import re
import sys

KINDS = [
    ("non-finite-real", r"malformed JSON at line \d+, column \d+: real number overflow"),
    ("syntax", r"malformed JSON at line \d+, column \d+: "),
    ("duplicate-key", r"duplicate key at line \d+, column \d+"),
    ("top-level", r"^config: the top level must be a JSON object"),
    ("schema-version", r"^schema_version: "),
    ("unknown-key", r'unknown key "'),
    ("not-an-object", r"^[a-z_.]+: expected an object, got "),
    ("real-for-integer", r"integer keys do not accept reals"),
    ("schedule-order", r"^controller\.schedule\.points\[\d+\]\.step: steps must be strictly increasing"),
    ("schedule-point", r"^controller\.schedule\.points\[\d+\]"),
    ("wrong-type", r": expected .*, got (a string|an object|an array|true|false|null|the integer|the real)"),
    ("out-of-range", r" is out of range; expected "),
    ("unknown-name", r'unknown value "'),
    ("scale-factor", r"^loss\.loss_scale_factor: loss_agg_mode .* needs loss_scale_factor > 0"),
    ("clip-cov-bounds", r"^loss\.clip_cov_ub: must be greater than loss\.clip_cov_lb"),
    ("temperature-bounds", r"^controller\.adaptive\.t_max: must be greater than controller\.adaptive\.t_min"),
    ("alpha-actuator", r"for the adaptive alpha actuator"),
    ("schedule-steps", r"^controller\.schedule\.end_step: must be >= controller\.schedule\.start_step"),
    ("piecewise-points", r"^controller\.schedule\.points: a piecewise schedule needs at least one"),
]


class Error(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int32), ("reserved", ctypes.c_int32), ("index", ctypes.c_int64),
                ("argument", ctypes.c_char * 64), ("message", ctypes.c_char * 320)]


def classify(message):
    for kind, pattern in KINDS:
        if re.search(pattern, message):
            return kind
    return None


def main():
    lib_path, corpus = sys.argv[1], sys.argv[2]
    lib = ctypes.CDLL(os.path.abspath(lib_path))
    lib.aepo_config_validate.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Error)]
    lib.aepo_config_validate.restype = ctypes.c_int32
    creates = []
    for kind in ("loss", "controller", "sampler", "fused_head"):
        create = getattr(lib, f"aepo_{kind}_create")
        create.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Error)]
        create.restype = ctypes.c_int32
        free = getattr(lib, f"aepo_{kind}_free")
        free.argtypes = [ctypes.c_void_p]
        free.restype = None
        creates.append((kind, create, free))

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "CONFIG.md")).read()
    section = doc.split("## Error kinds", 1)[1]
    documented = re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.M)
    problems = []
    known = {k for k, _ in KINDS}
    for k in documented:
        if k not in known:
            problems.append(f"docs/CONFIG.md lists the kind {k!r}, which this script cannot classify")
    for k in known - set(documented):
        problems.append(f"the kind {k!r} is classified here but not listed in docs/CONFIG.md")

    reached = {}
    for name in sorted(os.listdir(corpus)):
        data = open(os.path.join(corpus, name), "rb").read()
        err = Error()
        found = []
        if lib.aepo_config_validate(data, len(data), ctypes.byref(err)) != 0:
            found.append(err.message.decode("utf-8", "replace"))
        else:
            for kind, create, free in creates:
                h = ctypes.c_void_p()
                if create(data, len(data), ctypes.byref(h), ctypes.byref(err)) != 0:
                    found.append(err.message.decode("utf-8", "replace"))
                else:
                    free(h)
        for message in found:
            kind = classify(message)
            if kind is None:
                problems.append(f"{name}: no documented kind matches: {message}")
            else:
                reached.setdefault(kind, name)
        if "--list" in sys.argv:
            print(f"{name:32s} {', '.join(sorted({classify(m) or '?' for m in found})) or 'valid'}")

    for k in documented:
        if k not in reached:
            problems.append(f"no corpus document reaches the config error kind {k!r}")
    if problems:
        print("config_error_kinds: FAILED")
        for p in problems:
            print("  - " + p)
        sys.exit(1)
    print(f"config_error_kinds: the corpus ({len(os.listdir(corpus))} documents) reaches all "
          f"{len(documented)} documented kinds of config error")


if __name__ == "__main__":
    main()
