"""make_ckpts.py OUTDIR — PyTorch checkpoints for tests/test_ckpt.c, written
by real torch (Debian's python3-torch; run with /usr/bin/python3).

For every good checkpoint NAME.ckpt it writes NAME.manifest: one line per
tensor, tab-separated: name, dtype (tierload's name), shape (comma list),
strides ("-" when contiguous), and the file holding the tensor's bytes as
torch.load returns them (row-major, little-endian), NAME.K.bin. Scalars kept
as metadata go to NAME.meta as "key<TAB>type<TAB>value" lines.

Exits 77 when torch cannot be imported. Hostile files (refused by tierload) are written next to them; evil_*.ckpt
carry live payloads: torch.load of one of them really runs its command (this
script checks that on a copy, with a different marker file).
"""
import io
import os
import struct
import sys
import zipfile
import zlib

try:
    import torch
except ImportError as e:  # the test skips on 77 and prints this
    print(f"{sys.executable} cannot import torch ({e}); apt-get install python3-torch")
    sys.exit(77)

OUT = sys.argv[1]
DT = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.complex64: "C64",
}


def p(name):
    return os.path.join(OUT, name)


def contiguous_strides(shape):
    s, acc = [], 1
    for n in reversed(shape):
        s.append(acc)
        acc *= n
    return list(reversed(s))


def is_contiguous(t):
    # tierload's rule (torch's): strides of size-1 dims do not matter
    if t.numel() == 0:
        return True
    exp = contiguous_strides(list(t.shape))
    return all(n == 1 or a == b for n, a, b in zip(t.shape, t.stride(), exp))


def raw(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def flatten(obj, prefix, out_t, out_m):
    if isinstance(obj, torch.Tensor):
        out_t.append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out_t, out_m)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, f"{prefix}.{i}" if prefix else str(i), out_t, out_m)
    elif isinstance(obj, bool):
        out_m.append((prefix, "bool", "true" if obj else "false"))
    elif isinstance(obj, int):
        out_m.append((prefix, "int", str(obj)))
    elif isinstance(obj, float):
        out_m.append((prefix, "float", repr(obj)))
    elif isinstance(obj, str):
        out_m.append((prefix, "str", obj))


def save_good(name, obj, **kw):
    path = p(name + ".ckpt")
    torch.save(obj, path, **kw)
    back = torch.load(path)  # the expected bytes: what torch itself reads back
    tensors, meta = [], []
    if isinstance(back, dict) and isinstance(back.get("state_dict"), dict):
        flatten(back["state_dict"], "", tensors, meta)
        for k, v in back.items():
            if k != "state_dict" and isinstance(v, (int, float, str, bool)):
                flatten(v, k, tensors, meta)
    else:
        flatten(back, "", tensors, meta)
    with open(p(name + ".manifest"), "w") as f:
        for i, (n, t) in enumerate(tensors):
            shape = ",".join(str(x) for x in t.shape)
            strides = "-" if is_contiguous(t) else ",".join(str(x) for x in t.stride())
            binf = f"{name}.{i}.bin"
            with open(p(binf), "wb") as b:
                b.write(raw(t))
            f.write(f"{n}\t{DT[t.dtype]}\t{shape}\t{strides}\t{binf}\n")
    with open(p(name + ".meta"), "w") as f:
        for k, ty, v in meta:
            f.write(f"{k}\t{ty}\t{v}\n")
    return path


torch.manual_seed(0)

# every dtype, 0-d, empty, shared storages, storage offsets, strided views, nesting
base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
flat = torch.arange(100, dtype=torch.int64)
every = {
    "f32": torch.randn(3, 5),
    "f16": torch.randn(4, 2).half(),
    "bf16": torch.randn(7).bfloat16(),
    "f64": torch.randn(2, 3, 2, dtype=torch.float64),
    "i64": torch.arange(-5, 5),
    "i32": torch.tensor([[1, -2], [2**31 - 1, -2**31]], dtype=torch.int32),
    "i16": torch.tensor([-32768, 0, 32767], dtype=torch.int16),
    "i8": torch.tensor([-128, 5, 127], dtype=torch.int8),
    "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True, True]),
    "c64": torch.randn(2, 3, dtype=torch.complex64),
    "scalar": torch.tensor(3.5),
    "scalar_i16": torch.tensor(-7, dtype=torch.int16),
    "empty": torch.zeros(0, 4),
    "empty_i8": torch.zeros(0, dtype=torch.int8),
    "shared": {
        "base": base,
        "row2": base[2],
        "tail": base.view(-1)[10:30],
        "cols": base[:, 1:4],
        "T": base.t(),
        "step": base[1::2, ::3],
        "block": base[2:5, 3:7],
    },
    "flat_mid": flat[37:61],
    "flat_odd": flat[1::7],
    "expand": torch.arange(4, dtype=torch.float32).reshape(1, 4).expand(3, 4),
    "param": torch.nn.Parameter(torch.randn(2, 2)),
    "nested": {"a": {"b": {"c": torch.ones(2)}}, "list": [torch.zeros(1), torch.full((2,), 7.0)],
               "tup": (torch.tensor([1, 2], dtype=torch.int32),)},
    "meta_int": 5,
    "meta_float": 0.25,
    "meta_str": "hello",
    "meta_bool": False,
    "meta_none": None,
    7: torch.tensor([9], dtype=torch.uint8),
}
save_good("every", every)

# a real module's state dict (OrderedDict with _metadata; BatchNorm's 0-d int64 counter)
mod = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
save_good("module", mod.state_dict())

# Stable Diffusion convention: {"state_dict": ..., "global_step": ..., "epoch": ...}
sd = {
    "model.diffusion_model.input_blocks.1.0.in_layers.0.weight": torch.randn(8),
    "model.diffusion_model.output_blocks.4.1.proj_in.weight": torch.randn(4, 4).half(),
    "first_stage_model.encoder.conv_in.weight": torch.randn(2, 3, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.randn(5, 4),
    "model_ema.decay": torch.tensor(0.9999),
}
save_good("sd", {"state_dict": sd, "global_step": 840000, "epoch": 6, "lr": 1e-4,
                 "optimizer_states": [{"x": torch.ones(3)}]})

# ZIP64 over 4 GiB, sparse: a small real checkpoint's pieces behind a 4.5 GiB hole
small_path = save_good("small", {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                                 "b": torch.tensor([1, -1], dtype=torch.int16),
                                 "v": torch.arange(16, dtype=torch.float32).reshape(4, 4)[:, 1]})
PAD = (9 << 29) + 123  # 4.5 GiB + a bit, so later offsets need ZIP64
with zipfile.ZipFile(small_path) as z:
    pieces = [(i.filename.split("/", 1)[1], z.read(i.filename)) for i in z.infolist()]
big = p("big.ckpt")
cd = []
with open(big, "wb") as f:
    def local(name, data, size=None, crc=None, skip=False):
        off = f.tell()
        n = name.encode()
        size = len(data) if size is None else size
        crc = zlib.crc32(data) if crc is None else crc
        z64 = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, size) if z64 else b""
        s32 = 0xFFFFFFFF if z64 else size
        f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, s32, s32, len(n),
                            len(extra)) + n + extra)
        if skip:
            f.seek(size, 1)
        else:
            f.write(data)
        cd.append((n, crc, size, off))
    local("big/data.pkl", dict(pieces)["data.pkl"])
    local("big/pad.bin", b"", size=PAD, crc=0, skip=True)  # a hole: no bytes written
    for name, data in pieces:
        if name != "data.pkl":
            local("big/" + name, data)
    cd_off = f.tell()
    for n, crc, size, off in cd:
        fields = []
        if size >= 0xFFFFFFFF:
            fields += [size, size]
        if off >= 0xFFFFFFFF:
            fields.append(off)
        extra = struct.pack("<HH" + "Q" * len(fields), 1, 8 * len(fields), *fields) if fields else b""
        s32 = 0xFFFFFFFF if size >= 0xFFFFFFFF else size
        o32 = 0xFFFFFFFF if off >= 0xFFFFFFFF else off
        f.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, s32, s32,
                            len(n), len(extra), 0, 0, 0, 0, o32) + n + extra)
    cd_size = f.tell() - cd_off
    z64_off = f.tell()
    f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(cd), len(cd), cd_size,
                        cd_off))
    f.write(struct.pack("<IIQI", 0x07064B50, 0, z64_off, 1))
    f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
assert os.path.getsize(big) > (1 << 32)
with zipfile.ZipFile(big) as z:  # an outside reader agrees the archive is sound
    for name, data in pieces:
        assert z.read("big/" + name) == data, name
back = torch.load(big)
assert torch.equal(back["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))

# ---- hostile files ----
marker = os.environ.get("TL_MARKER", p("PWNED"))


class System:
    def __init__(self, m):
        self.m = m

    def __reduce__(self):
        return (os.system, ("touch " + self.m,))


class Eval:
    def __init__(self, m):
        self.m = m

    def __reduce__(self):
        return (eval, (f"open({self.m!r}, 'w').close()",))


class Import:
    def __reduce__(self):
        return (__import__, ("os",))


torch.save({"w": torch.ones(2), "x": System(marker)}, p("evil_system.ckpt"))
torch.save({"w": torch.ones(2), "x": Eval(marker)}, p("evil_eval.ckpt"))
torch.save({"w": torch.ones(2), "x": Import()}, p("evil_import.ckpt"))
# the payloads are live: torch.load runs them (on a different marker)
live = p("live-marker")
torch.save({"x": System(live)}, p("live.ckpt"))
torch.load(p("live.ckpt"))
assert os.path.exists(live), "the os.system payload did not run under torch.load"
os.remove(live)
os.remove(p("live.ckpt"))

torch.save({"w": torch.ones(3)}, p("legacy.pt"), _use_new_zipfile_serialization=False)
torch.save(torch.ones(3), p("tensor_top.pt"))
deep = torch.ones(1)
for i in range(40):
    deep = {"k": deep}
torch.save(deep, p("deep.ckpt"))


# more storages than a checkpoint needs for its pickle to run beside the local headers' reads
save_good("many", {f"layer{i}.w": torch.randn(3 + i % 5, 16) for i in range(150)})


def rezip(src, dst, edit):
    """Copy src's entries into dst (stored unless edit says otherwise)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            r = edit(info.filename, data)
            if r is None:
                continue
            data, method = r
            zo.writestr(zipfile.ZipInfo(info.filename), data, compress_type=method)


S = zipfile.ZIP_STORED
D = zipfile.ZIP_DEFLATED
rezip(small_path, p("deflated.ckpt"), lambda n, d: (d, D))
rezip(small_path, p("deflated_storage.ckpt"), lambda n, d: (d, D if n.endswith("/data/0") else S))
rezip(small_path, p("short_storage.ckpt"),
      lambda n, d: (d[: len(d) // 2] if n.endswith("/data/0") else d, S))
rezip(small_path, p("missing_storage.ckpt"), lambda n, d: None if n.endswith("/data/0") else (d, S))
rezip(small_path, p("restored.ckpt"), lambda n, d: (d, S))  # same content, Python's zip writer


def with_pickle(name, pk):
    rezip(small_path, p(name), lambda n, d: (pk if n.endswith("data.pkl") else d, S))


with_pickle("marks.ckpt", b"\x80\x02" + b"(" * 70000 + b"}.")
with_pickle("hugestr.ckpt", b"\x80\x02X\xf0\xff\xff\xff" + b"a" * 16 + b".")
with_pickle("hugememo.ckpt", b"\x80\x02}r\xff\xff\xff\x7f.")
with_pickle("hugelong.ckpt", b"\x80\x02}X\x01\x00\x00\x00a\x8a\x10" + b"\x01" * 16 + b"s.")
with_pickle("stack_global.ckpt", b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x04true\x85R.")
# {"a": t30} where t(k+1) = (tk, tk): 2^30 leaves from 66 bytes of shared references
with_pickle("fanout.ckpt", b"\x80\x02}X\x01\x00\x00\x00aK\x01" + b"2\x86" * 30 + b"s.")
with_pickle("cycle.ckpt", b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.")
# a tensor claiming more elements than its storage holds
pk = dict(pieces)["data.pkl"]
with_pickle("outside.ckpt", pk.replace(b"K\x02K\x03\x86", b"K\x09K\x03\x86", 1))
print("ok")
