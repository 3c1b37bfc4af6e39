#!/usr/bin/python3
"""llama_compare.py — hold two logit files (positions x vocab, little-endian F32) against each
other: the llama example's against llama.cpp's (tests/tools/llama_oracle.c).

usage: llama_compare.py REFERENCE OURS VOCAB (--rel R | --abs A)
Prints max |difference|, max |reference| and the limit; exit 0 within the limit (and every value
finite, same shape), 1 otherwise. --diff prints only max |a - b| (to measure a tolerance)."""
import sys

import numpy as np


def main():
    args = sys.argv[1:]
    if len(args) < 4:
        print(__doc__)
        return 2
    ref = np.fromfile(args[0], dtype="<f4")
    ours = np.fromfile(args[1], dtype="<f4")
    vocab = int(args[2])
    if ref.size == 0 or ref.size % vocab or ours.size != ref.size:
        print(f"FAIL: shapes: reference {ref.size} values, ours {ours.size}, vocab {vocab}")
        return 1
    if not (np.isfinite(ref).all() and np.isfinite(ours).all()):
        print("FAIL: values that are not finite")
        return 1
    diff = float(np.abs(ref.astype(np.float64) - ours.astype(np.float64)).max())
    if args[3] == "--diff":
        print(f"{diff:.9g}")
        return 0
    scale = float(np.abs(ref).max())
    limit = float(args[4]) * scale if args[3] == "--rel" else float(args[4])
    ok = diff <= limit
    print(f"{'ok' if ok else 'FAIL'}: {ref.size // vocab} positions, max |diff| {diff:.6g}, "
          f"max |logit| {scale:.6g}, limit {limit:.6g}")
    return 0 if ok else 1


sys.exit(main())
