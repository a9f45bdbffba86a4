"""`make demo`: a short, real use of the library.

Usage: python -m aepo.demo [--config FILE]
"""
import argparse
import json
import sys
import time

import aepo


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m aepo.demo")
    ap.add_argument("--config", help="a JSON config file to validate and show")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"libaepo {aepo.__version__} loaded from {aepo.library_path}")
    cfg = None
    if args.config:
        with open(args.config) as f:
            cfg = f.read()
    try:
        full = aepo.validate_config(cfg)
    except aepo.ConfigError as e:
        print(f"config error at {e.argument}: {e}")
        return 1
    c = full["controller"]
    print(f"controller: mode={c['mode']} target={c['target']} T_high={c['t_high']} T_low={c['t_low']} "
          f"k_max={c['k_max']} statistic={c['statistic']}")
    for bad in ({"controller": {"t_high": 0}}, {"loss": {"threads": 2.0}}):
        try:
            aepo.validate_config(bad)
        except aepo.ConfigError as e:
            print(f"rejected {json.dumps(bad)}: {e}")
    print(f"done in {time.perf_counter() - t0:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
