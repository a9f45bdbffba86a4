#!/usr/bin/env python3
"""Checks the shipped library against its header.

- the dynamic symbol table defines exactly the functions the header declares (AEPO_API);
- the SONAME is libaepo.so.<AEPO_ABI_VERSION>;
- the only shared libraries it needs are libc/libm/libstdc++/libgcc_s, the loader,
  libjansson and libopenblas (so no Swift runtime);
- it carries no RUNPATH pointing into a toolchain.
"""
import re
import subprocess
import sys

lib, header = sys.argv[1], sys.argv[2]
text = open(header).read()
text_nc = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
declared = set(re.findall(r"AEPO_API\s+[^;(]*?\b(aepo_\w+)\s*\(", text_nc))
abi = re.search(r"#define\s+AEPO_ABI_VERSION\s+(\d+)", text).group(1)

nm = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True, check=True).stdout
exported = set()
stray = []
for line in nm.splitlines():
    parts = line.split()
    if len(parts) < 3:
        continue
    name = parts[2]
    if name.startswith("aepo_"):
        exported.add(name)
    else:
        stray.append(name)

dyn = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True, check=True).stdout
needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", dyn)
soname = re.findall(r"\(SONAME\)\s+Library soname: \[(.*?)\]", dyn)
runpath = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*?)\]", dyn)
allowed = re.compile(r"^(libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2|"
                     r"libjansson\.so\.\d+|libopenblas\.so\.\d+|libpthread\.so\.0|libdl\.so\.2)$")

problems = []
if declared - exported:
    problems.append("declared in the header but not exported: " + ", ".join(sorted(declared - exported)))
if exported - declared:
    problems.append("exported but not declared in the header: " + ", ".join(sorted(exported - declared)))
if stray:
    problems.append("non-aepo dynamic symbols: " + ", ".join(stray[:10]))
if soname != [f"libaepo.so.{abi}"]:
    problems.append(f"SONAME is {soname}, expected libaepo.so.{abi}")
bad = [n for n in needed if not allowed.match(n)]
if bad:
    problems.append("unexpected runtime dependencies: " + ", ".join(bad))
if any(p not in ("$ORIGIN", "") for p in runpath):
    problems.append(f"RUNPATH points outside the library's folder: {runpath}")

if problems:
    print("check_exports: FAILED")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print(f"check_exports: {len(exported)} symbols match the header; SONAME {soname[0]}; needs {', '.join(needed)}")
