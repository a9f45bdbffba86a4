#!/usr/bin/env bash
# Creates (once) and prints the path of the Python virtualenv used by tests, bench and demo.
# It lives outside the clone, under ~/.cache/libaepo/, keyed by the requirements file and the
# Python version, so repeated runs on one machine reuse it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
req="$here/bindings/python/requirements-dev.txt"
py=${PYTHON:-python3}
key=$( (cat "$req"; "$py" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
root=${AEPO_CACHE_DIR:-$HOME/.cache/libaepo}
venv="$root/venv-$key"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$root"
  tmp="$venv.tmp.$$"
  rm -rf "$tmp"
  echo "venv: creating $venv (one time)" >&2
  "$py" -m venv "$tmp"
  "$tmp/bin/pip" install -q -r "$req" >&2
  # A CPU-only torch wheel is preferred; plain torch is the fallback.
  if ! "$tmp/bin/pip" install -q "torch==2.13.0+cpu" >&2 2>/dev/null; then
    echo "venv: torch==2.13.0+cpu not found, installing torch" >&2
    "$tmp/bin/pip" install -q torch >&2
  fi
  rm -rf "$venv"
  mv "$tmp" "$venv"
  # pip wrote absolute paths of the temporary folder into its scripts.
  grep -rl "$tmp" "$venv/bin" 2>/dev/null | xargs -r sed -i "s|$tmp|$venv|g"
fi
echo "$venv"
