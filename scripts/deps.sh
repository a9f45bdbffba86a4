#!/usr/bin/env bash
# Makes sure the system packages libaepo builds against are present, and any named on the
# command line (scripts/deps.sh valgrind).
# As root it installs what is missing; otherwise it prints the exact command and fails.
set -euo pipefail
pkgs=(libopenblas-dev libjansson-dev pkg-config "$@")
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "deps: missing system packages: ${missing[*]}" >&2
  echo "deps: run this, then try again:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
