#!/usr/bin/python3
# peer_sdcpp_compare.py BASE.png LORA_SDCPP.png LORA_MERGED.png — the pictures of peer_sdcpp.sh:
# BASE (the demo model) must not be uniform; the demo LoRA applied by stable-diffusion.cpp and
# merged by `tierload merge` must give the same picture within LIMIT (mean absolute difference
# over all pixels and channels, in 8-bit levels); and the LoRA must change the picture (BASE
# against the merged one) by more than LIMIT, or the agreement would show nothing. Exit 0 when
# all hold, 1 otherwise, 77 when numpy or PIL is missing.
import sys

try:
    import numpy as np
    from PIL import Image
except ImportError as e:
    print(f'peer_sdcpp: NOT CHECKED: {e} (apt-get install python3-numpy python3-pil)')
    sys.exit(77)

# Both LoRA pictures come from the same F16 weights up to rounding: sd.cpp adds the LoRA's
# delta to each weight when it loads them and rounds the sum to F16; tierload merges in F32 and
# rounds once. The two weights differ by at most one F16 step (2^-11 relative), which 1 step of
# sampling and the VAE turn into differences of a level or two in a few pixels; 1.0 level on
# average is several times that and far below what the LoRA itself changes. With sd.cpp of
# August 2026 the two pictures were identical, and a merge at scale 0.95 instead of 1 differed by
# 2.2 levels: the limit catches a LoRA merged 5% off.
LIMIT = 1.0


def load(p):
    return np.asarray(Image.open(p).convert('RGB'), dtype=np.int16)


def stats(name, a, b):
    d = np.abs(a - b)
    print(f'  {name}: mean |diff| {d.mean():.3f} levels, max {d.max()}, '
          f'pixels differing {np.mean(d.max(axis=2) > 0) * 100:.1f}%')
    return d.mean()


base, lsd, lmg = (load(p) for p in sys.argv[1:4])
ok = True
for name, a in (('base', base), ('lora-sdcpp', lsd), ('lora-merged', lmg)):
    colours = len(np.unique(a.reshape(-1, 3), axis=0))
    print(f'  {name}: {a.shape[1]}x{a.shape[0]}, mean {a.mean():.1f}, std {a.std():.1f}, '
          f'min {a.min()}, max {a.max()}, {colours} colours')
    if colours < 2 or a.std() < 1:
        print(f'peer_sdcpp: FAIL: {name} is uniform')
        ok = False
agree = stats('sd.cpp LoRA vs tierload merge', lsd, lmg)
effect = stats('LoRA effect (base vs merged)', base, lmg)
print(f'  limit: mean |diff| of the LoRA pictures <= {LIMIT}, LoRA effect > {LIMIT}')
if agree > LIMIT:
    print(f'peer_sdcpp: FAIL: the LoRA pictures differ by {agree:.3f} > {LIMIT}')
    ok = False
if effect <= LIMIT:
    print(f'peer_sdcpp: FAIL: the LoRA changes the picture by only {effect:.3f} <= {LIMIT}')
    ok = False
print('peer_sdcpp: ok' if ok else 'peer_sdcpp: FAILED')
sys.exit(0 if ok else 1)
