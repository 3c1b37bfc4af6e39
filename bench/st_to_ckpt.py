"""st_to_ckpt.py SRC.safetensors DST.ckpt — the same tensors, in the same
order, written by torch.save (zip format), for bench_open's comparison.
Run with /usr/bin/python3 (Debian's python3-torch)."""
import json
import struct
import sys

import numpy as np
import torch

NP = {"F32": np.float32, "F16": np.float16, "BF16": np.int16, "F64": np.float64,
      "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
      "BOOL": np.bool_}
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
mm = np.memmap(src, dtype=np.uint8, mode="r")
sd = {}
for name, t in header.items():
    if name == "__metadata__":
        continue
    b, e = t["data_offsets"]
    a = np.frombuffer(mm[8 + n + b: 8 + n + e], dtype=NP[t["dtype"]]).reshape(t["shape"])
    x = torch.from_numpy(a.copy())
    sd[name] = x.view(torch.bfloat16) if t["dtype"] == "BF16" else x
torch.save(sd, dst)
