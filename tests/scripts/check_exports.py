#!/usr/bin/python3
"""check_exports.py — the shared library exports exactly the public API.

Lists the dynamic symbols libtierload.so defines (nm -D --defined-only) and the
functions include/tierload.h declares, and fails when either has a name the
other lacks, or when a declaration lacks TL_API; and checks the ABI's marks:
every exported symbol is versioned TIERLOAD_<ABI> and the SONAME is
libtierload.so.<ABI>, ABI being the header's TL_ABI_VERSION (passed by CMake).

usage: check_exports.py LIBTIERLOAD_SO TIERLOAD_H ABI_VERSION
"""
import re
import subprocess
import sys


def header_functions(path):
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^\s*#.*?(?<!\\)$", " ", text, flags=re.M | re.S)
    text = text.replace('extern "C" {', " ")
    # drop struct, union and enum bodies (innermost first)
    while True:
        shorter = re.sub(r"\{[^{}]*\}", " ", text)
        if shorter == text:
            break
        text = shorter
    names, unmarked = set(), []
    for stmt in text.split(";"):
        stmt = " ".join(stmt.split())
        if not stmt or stmt.startswith("typedef"):
            continue
        m = re.search(r"\b(tl_[a-z0-9_]+)\s*\(", stmt)
        if not m:
            continue
        names.add(m.group(1))
        if not stmt.startswith("TL_API "):
            unmarked.append(m.group(1))
    return names, unmarked


def library_symbols(path):
    """name -> symbol version ('' when unversioned)"""
    out = subprocess.run(["nm", "-D", "--defined-only", path], check=True,
                         capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtDdBbRrVvWwi":
            name, _, version = parts[2].partition("@")
            syms[name] = version.lstrip("@")
    return syms


def soname(path):
    out = subprocess.run(["readelf", "-d", path], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return m.group(1) if m else None


def main():
    lib, header, abi = sys.argv[1], sys.argv[2], sys.argv[3]
    declared, unmarked = header_functions(header)
    versions = library_symbols(lib)
    # symbols the toolchain adds to every shared object, and the version node's own symbol
    for name in ("_init", "_fini", "_edata", "_end", "__bss_start", f"TIERLOAD_{abi}"):
        versions.pop(name, None)
    exported = set(versions)
    bad = False
    for name in sorted(exported):
        if versions[name] != f"TIERLOAD_{abi}":
            print(f"{name}: symbol version '{versions[name]}', not TIERLOAD_{abi}")
            bad = True
    so = soname(lib)
    if so != f"libtierload.so.{abi}":
        print(f"SONAME {so}, not libtierload.so.{abi}")
        bad = True
    for name in sorted(exported - declared):
        print(f"exported but not declared in tierload.h: {name}")
        bad = True
    for name in sorted(declared - exported):
        print(f"declared in tierload.h but not exported: {name}")
        bad = True
    for name in unmarked:
        print(f"declared without TL_API: {name}")
        bad = True
    print(f"{len(declared)} functions declared, {len(exported)} symbols exported")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
