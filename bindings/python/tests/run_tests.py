#!/usr/bin/python3
"""run_tests.py — the Python binding's tests (a plain script: Debian has no pytest by default).

usage: run_tests.py [SOURCE_DIR]   (TIERLOAD_LIBRARY names the libtierload.so under test)

Expected bytes come from this script's own safetensors writer and from os.pread of the file, never
from the library. Exits 77 (a skip, with the reason printed) when numpy or torch is missing or
a case skipped; with CI=true a missing dependency is a failure instead.
"""
import gc
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "bindings", "python"))

try:
    import numpy as np
    import torch
except ImportError as e:
    print("SKIP: the Python tests need numpy and torch (apt-get install python3-numpy "
          "python3-torch; `make deps` does): %s" % e)
    sys.exit(1 if os.environ.get("CI") in ("true", "1") else 77)

import tierload  # noqa: E402

MiB = 1 << 20
FAILED = []
SKIPPED = []
CASES = []


def skip(name, why):
    """A case that cannot run here: reported, counted (exit 77), and a failure under CI=true."""
    print("  (skipped: %s)" % why)
    SKIPPED.append(name)


def case(fn):
    def run():
        t0 = time.time()
        try:
            fn()
            print("%s %s (%.1fs)" % ("skip" if fn.__name__ in SKIPPED else "ok  ", fn.__name__,
                                     time.time() - t0))
        except Exception as e:  # report and go on with the other cases
            import traceback
            traceback.print_exc()
            print("FAIL %s: %s" % (fn.__name__, e))
            FAILED.append(fn.__name__)
    run.__name__ = fn.__name__
    CASES.append(run)
    return run


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s in /proc/self/status" % field)


def write_safetensors(path, tensors, sparse_total=None):
    """tensors: list of (name, dtype, shape, bytes or None, nbytes). None data with sparse_total:
    the file is extended with ftruncate (zeros, no blocks). Returns {name: absolute offset}."""
    header, off = {}, 0
    for name, dt, shape, data, nbytes in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header).encode()
    h += b" " * ((-(8 + len(h))) % 64)  # data starts 64-byte aligned
    base = 8 + len(h)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, dt, shape, data, nbytes in tensors:
            if data is None:
                break
            f.write(data)
        if sparse_total is not None:
            f.truncate(base + off)
    return {name: base + header[name]["data_offsets"][0] for name in header}


def pread(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        out = b""
        while len(out) < n:
            chunk = os.pread(fd, n - len(out), off + len(out))
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(fd)


# every safetensors dtype name -> element bytes
DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8,
          "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "C64": 8, "F8_E4M3": 1,
          "F8_E5M2": 1}
NUMPY_HAS = {"F32", "F16", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL",
             "C64"}
TORCH_ATTR = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
              "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8",
              "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
              "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def torch_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


TMP = tempfile.mkdtemp(prefix="tierload-py-")
rng = np.random.default_rng(12345)


def dtype_model():
    path = os.path.join(TMP, "dtypes.safetensors")
    tensors = []
    for i, (dt, size) in enumerate(sorted(DTYPES.items())):
        shape = (3, 5 + i)
        n = 3 * (5 + i) * size
        data = rng.integers(0, 256, n, dtype=np.uint8)
        if dt == "BOOL":
            data = data & 1
        tensors.append(("model.diffusion_model.blocks.%d.%s" % (i, dt.lower()), dt, shape,
                        data.tobytes(), n))
    offs = write_safetensors(path, tensors)
    return path, tensors, offs


@case
def read_at_offsets_equals_file():
    # Model.read(name, offset, n) at the start, inside and at the end of tensors, against pread
    path, tensors, offs = dtype_model()
    m = tierload.open(path)
    checked = 0
    for name, dt, shape, data, nbytes in tensors:
        for off, n in ((0, nbytes), (1, nbytes - 1), (nbytes // 2, nbytes - nbytes // 2),
                       (3, 5), (nbytes - 1, 1), (nbytes, 0)):
            got = m.read(name, off, n)
            want = pread(path, offs[name] + off, n)
            assert len(want) == n and got == want, (name, off, n)
            checked += 1
        assert m.read(name, 7) == pread(path, offs[name] + 7, nbytes - 7), name
    assert checked == 6 * len(tensors) > 0


@case
def options_structs_match_the_library():
    # each options struct's size, as the C init writes it, is the ctypes layout's size
    import ctypes
    from tierload import _lib as L
    lib = L.lib
    for cls, init in ((L.ModelOptions, lib.tl_model_options_init),
                      (L.LoadOptions, lib.tl_load_options_init),
                      (L.PlanOptions, lib.tl_plan_options_init),
                      (L.SessionOptions, lib.tl_session_options_init),
                      (L.SpillOptions, lib.tl_spill_options_init)):
        o = cls()
        init(ctypes.byref(o))
        assert o.size == ctypes.sizeof(cls), "%s: C size %d, ctypes %d" % (
            cls.__name__, o.size, ctypes.sizeof(cls))


@case
def views_equal_file_bytes_for_every_dtype():
    path, tensors, offs = dtype_model()
    m = tierload.open(path)
    assert len(m.tensors) == len(tensors), m.tensors
    for name, dt, shape, data, nbytes in tensors:
        info = m.info(name)
        assert (info.dtype, info.shape, info.nbytes) == (dt, shape, nbytes), info
        assert info.component == "diffusion" and info.layer is not None, info
        want = pread(path, offs[name], nbytes)
        assert want == data
        assert bytes(m.raw(name)) == want, name
        if dt in NUMPY_HAS:
            a = m.numpy(name)
            assert a.shape == shape and not a.flags.writeable
            assert a.tobytes() == want, name
        else:
            try:
                m.numpy(name)
                raise AssertionError("numpy view of %s did not fail" % dt)
            except tierload.Unsupported as e:
                assert dt in str(e) and e.status == "TL_ERR_UNSUPPORTED", e
        if getattr(torch, TORCH_ATTR[dt], None) is not None:
            t = m.torch(name)
            assert tuple(t.shape) == shape and t.dtype == getattr(torch, TORCH_ATTR[dt])
            assert torch_bytes(t) == want, name
            # zero copy: the tensor's data is inside the mapping (the file's bytes)
            assert t.data_ptr() == m.raw(name).ctypes.data
        else:
            try:
                m.torch(name)
                raise AssertionError("torch view of %s did not fail" % dt)
            except tierload.Unsupported as e:
                assert dt in str(e) and torch.__version__ in str(e), e


@case
def layers_in_compute_order_with_keys():
    # names sorted as Hugging Face's writer sorts them: input_blocks.10 before input_blocks.2
    path = os.path.join(TMP, "sorted.safetensors")
    u = "model.diffusion_model."
    names = sorted(u + n for n in ("input_blocks.1.0.w", "input_blocks.2.0.w", "input_blocks.10.0.w",
                                   "middle_block.0.w", "output_blocks.0.0.w", "time_embed.0.w"))
    write_safetensors(path, [(n, "F16", (4,), b"\0" * 8, 8) for n in names])
    m = tierload.open(path)
    keys = [m.layer_key("diffusion", k) for k in range(m.layer_count("diffusion"))]
    assert keys == [u + "input_blocks.1", u + "input_blocks.2", u + "input_blocks.10",
                    u + "middle_block.0", u + "output_blocks.0"], keys
    assert m.layer_find("diffusion", "input_blocks.1") == 0
    assert m.layer_find("diffusion", "input_blocks.10") == 2
    assert m.layer_find("diffusion", "input_blocks.3") is None
    assert m.layer_key("diffusion", 5) is None
    assert m.info(u + "input_blocks.10.0.w").layer == 2  # the same index as the session's
    assert m.info(u + "time_embed.0.w").layer is None


@case
def two_diffusion_models_by_component_rules():
    path = os.path.join(TMP, "two.safetensors")
    names = ["high.blocks.0.w", "high.blocks.1.w", "low.blocks.0.w", "low.blocks.1.w"]
    write_safetensors(path, [(n, "F16", (4,), b"\0" * 8, 8) for n in names])
    assert {t.component for t in tierload.open(path).tensors} == {"other"}
    m = tierload.open(path, components="high.=diffusion,low.=diffusion2")
    assert [m.info(n).component for n in names] == ["diffusion"] * 2 + ["diffusion2"] * 2
    assert m.layer_key("diffusion2", 1) == "low.blocks.1"
    p = tierload.plan(m, devices="g=1G", steps=3, steps2=2)
    phases = json.loads(p.json)["phases"]
    assert phases == ["cond", "diffusion+controlnet", "diffusion2", "vae"], phases
    p = tierload.plan(m, devices="g=1G", overrides=r"^\w+\.blocks\.1\.=cpu")
    ov = json.loads(p.json)["overrides"]
    assert ov == [{"pattern": r"^\w+\.blocks\.1\.", "device": "cpu", "bytes": 16,
                   "tensors": ["high.blocks.1.w", "low.blocks.1.w"]}], ov
    try:
        tierload.open(path, components="low.=bogus")
        raise AssertionError("a bad rule opened")
    except tierload.InvalidArgument as e:
        assert "low.=bogus" in str(e), str(e)


@case
def quantized_gguf_raw_bytes_and_clear_error():
    # the test data that ctest's testdata fixture makes (tools/make_testdata.sh)
    path = os.path.join(os.environ.get("TL_TESTDATA", ""), "gguf", "tiny-llama-q4_0.gguf")
    if not os.environ.get("TL_TESTDATA") or not os.path.exists(path):
        skip("quantized_gguf_raw_bytes_and_clear_error", "%s missing (TL_TESTDATA)" % path)
        return
    m = tierload.open(path)
    q = [t for t in m.tensors if t.dtype == "Q4_0"]
    assert q, "no Q4_0 tensor"
    t = q[0]
    assert bytes(m.raw(t.name)) == pread(path, t.offset, t.nbytes)
    for fn in (m.numpy, m.torch):
        try:
            fn(t.name)
            raise AssertionError("a Q4_0 view did not fail")
        except tierload.Unsupported as e:
            assert "Q4_0" in e.message and t.name in e.message, e


@case
def open_1gib_grows_anon_rss_by_less_than_8mib():
    path = os.path.join(TMP, "big.safetensors")
    n_t, per = 16, 64 * MiB
    tensors = [("model.diffusion_model.blocks.%d.w" % i, "F32", (per // 4096, 1024), None, per)
               for i in range(n_t)]
    offs = write_safetensors(path, tensors, sparse_total=True)
    # a known pattern at a few places of every tensor, so the views are compared with non-zeros
    marks = {}
    with open(path, "r+b") as f:
        for name, off in offs.items():
            for k in (0, per // 2 + 12, per - 4096):
                pat = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
                f.seek(off + k)
                f.write(pat)
                marks[(name, k)] = pat
    assert os.path.getsize(path) >= 1 << 30
    gc.collect()
    before = status_kb("RssAnon")
    m = tierload.open(path)
    views = [m.torch(t.name) for t in m.tensors] + [m.numpy(t.name) for t in m.tensors]
    grown = status_kb("RssAnon") - before
    print("  open of a 1 GiB file + %d views: RssAnon +%.2f MiB" % (len(views), grown / MiB))
    assert grown < 8 * MiB, grown
    for name, off in offs.items():
        a = m.numpy(name).reshape(-1).view(np.uint8)
        for (nm, k), pat in marks.items():
            if nm == name:
                assert a[k:k + 4096].tobytes() == pat, (name, k)
        # whole tensor against an independent read, 16 MiB at a time
        for s in range(0, per, 16 * MiB):
            assert a[s:s + 16 * MiB].tobytes() == pread(path, off + s, 16 * MiB), (name, s)
    del views, a
    m.close()
    os.unlink(path)


def spill_files(d):
    """Mappings and descriptors of this process that point into d."""
    maps = [line for line in open("/proc/self/maps") if d in line]
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith(d):
                fds.append(fd)
        except OSError:
            pass
    return maps, fds


class PeakSampler:
    """Highest VmRSS seen by a thread sampling /proc/self/status (ctypes calls drop the GIL)."""

    def __init__(self):
        self.peak = status_kb("VmRSS")
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, status_kb("VmRSS"))
            time.sleep(0.0005)

    def done(self):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, status_kb("VmRSS"))
        return self.peak


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@case
def spill_512mib_peak_rss_below_96mib_and_nothing_left():
    d = tempfile.mkdtemp(prefix="spill-", dir=TMP)
    n = 128 * MiB  # int32 elements: 512 MiB
    t = torch.arange(n, dtype=torch.int32)
    t[::4097] = -7
    gc.collect()
    base = status_kb("VmRSS")
    hwm = reset_hwm()
    sampler = PeakSampler()
    s = tierload.spill(t, dir=d)
    peak = sampler.done()
    if hwm:
        peak = max(peak, status_kb("VmHWM"))
    print("  spill of 512 MiB: VmRSS %.0f MiB before, peak +%.1f MiB (%s)" % (
        base / MiB, (peak - base) / MiB, "VmHWM and sampler" if hwm else "sampler"))
    assert peak - base < 96 * MiB, (peak - base) / MiB
    assert s.dtype == t.dtype and s.shape == t.shape
    maps, fds = spill_files(d)
    assert len(fds) == 1 and maps, (maps, fds)
    assert os.listdir(d) == [], os.listdir(d)  # unlinked from the start
    assert torch.equal(s, t)
    assert s.data_ptr() != t.data_ptr()
    s[0] = 5  # private mapping: writable, and the file is not changed
    assert int(s[0]) == 5 and int(t[0]) == -7
    # a bf16 and a non-contiguous tensor take the other paths
    b = torch.randn(300, 70).to(torch.bfloat16)
    sb = tierload.spill(b, dir=d, chunk=4096)
    assert sb.dtype == torch.bfloat16 and torch.equal(sb, b)
    nc = torch.arange(4000, dtype=torch.float64).reshape(40, 100)[:, ::3]
    snc = tierload.spill(nc, dir=d, chunk=800)
    assert torch.equal(snc, nc) and snc.is_contiguous()
    arr = np.arange(1000, dtype=np.float32).reshape(10, 100)
    sa = tierload.spill(arr, dir=d)
    assert isinstance(sa, np.ndarray) and np.array_equal(sa, arr)
    assert len(spill_files(d)[1]) == 4
    del s, t, sb, b, snc, nc, sa
    gc.collect()
    maps, fds = spill_files(d)
    assert maps == [] and fds == [], (maps, fds)
    assert os.listdir(d) == []


@case
def errors_carry_status_and_message():
    missing = os.path.join(TMP, "nope.safetensors")
    try:
        tierload.open(missing)
        raise AssertionError("open of a missing file did not fail")
    except tierload.NotFound as e:
        assert e.status == "TL_ERR_NOT_FOUND" and missing in e.message, e
        assert isinstance(e, tierload.Error)
    bad = os.path.join(TMP, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(struct.pack("<Q", 10) + b"{not json}" + b"\0" * 16)
    try:
        tierload.open(bad)
        raise AssertionError("open of a malformed file did not fail")
    except tierload.FormatError as e:
        assert e.status == "TL_ERR_FORMAT" and bad in e.message and str(e).startswith(
            "TL_ERR_FORMAT: "), e
    path, _, _ = dtype_model()
    m = tierload.open(path)
    try:
        m.torch("no.such.tensor")
        raise AssertionError("a missing tensor did not fail")
    except tierload.NotFound as e:
        assert "no.such.tensor" in e.message
    try:
        tierload.load(m, mode="sideways")
        raise AssertionError("a bad mode did not fail")
    except tierload.InvalidArgument as e:
        assert "sideways" in e.message
    try:
        tierload.spill(torch.zeros(4), dir=os.path.join(TMP, "no-such-dir"))
        raise AssertionError("a spill into a missing folder did not fail")
    except tierload.Error as e:
        assert "no-such-dir" in e.message, e


@case
def load_modes_convert_and_progress():
    path, tensors, offs = dtype_model()
    m = tierload.open(path)
    calls = []
    for mode in ("mmap", "buffered", "auto"):
        r = tierload.load(m, mode=mode, verify=True, progress=lambda d, t: calls.append((d, t)))
        for name, dt, shape, data, nbytes in tensors:
            if getattr(torch, TORCH_ATTR[dt], None) is None:
                continue
            assert torch_bytes(r[name]) == data, (mode, name)
        assert r.files[0]["mode"] in ("mmap", "buffered", "direct"), r.files
    f16 = [t for t in tensors if t[1] == "F16"][0]
    r = tierload.load(path, mode="buffered", dtype="F32")
    want = np.frombuffer(f16[3], dtype="<f2").astype(np.float32).reshape(f16[2])
    got = r.numpy(f16[0])
    assert got.dtype == np.float32 and np.array_equal(got, want, equal_nan=True)
    # a callback that raises stops the load and the exception comes through
    big = os.path.join(TMP, "mid.safetensors")
    write_safetensors(big, [("w", "U8", (64 * MiB,), None, 64 * MiB)], sparse_total=True)

    def stop(done, total):
        raise KeyboardInterrupt("stop")
    try:
        tierload.load(big, mode="buffered", progress=stop, staging_size=1 << 20)
        print("  (the load finished before its first progress call)")
    except KeyboardInterrupt:
        pass


@case
def tensor_type_rules_in_load_plan_and_session():
    # sd.cpp's --tensor-type-rules: the first rule found in a name gives its type (numpy converts
    # for the expected values); a tensor no rule names stays as it is
    path = os.path.join(TMP, "rules.safetensors")
    x = (np.arange(64, dtype=np.float32) / 7).reshape(2, 32)
    write_safetensors(path, [("vae.w", "F32", (2, 32), x.tobytes(), 256),
                             ("model.w", "F32", (2, 32), x.tobytes(), 256),
                             ("cond.w", "F32", (2, 32), x.tobytes(), 256)])
    rules = r"^vae\.=f16,^mod\w+\.=bf16"
    r = tierload.load(path, mode="buffered", type_rules=rules)
    assert r.numpy("vae.w").dtype == np.float16 and np.array_equal(r.numpy("vae.w"), x.astype(np.float16))
    assert r.numpy("cond.w").dtype == np.float32 and np.array_equal(r.numpy("cond.w"), x)
    m = tierload.open(path)
    p = tierload.plan(m, sim="rulesg=64M", type_rules=rules)
    assert sum(c["bytes"] for c in json.loads(p.json)["components"]) == 128 + 128 + 256
    with tierload.Session(m, p, type_rules=rules) as s:
        with s.acquire_tensors(["model.w", "cond.w"]) as a:
            assert a["model.w"].dtype == "BF16" and a["cond.w"].dtype == "F32"
    try:
        tierload.load(path, type_rules="vae.=q4_k")
        raise AssertionError("a bad rule loaded")
    except tierload.InvalidArgument as e:
        assert "vae.=q4_k" in str(e), str(e)


@case
def session_acquire_host_and_device():
    path, tensors, offs = dtype_model()
    m = tierload.open(path)
    p = tierload.plan(m, devices="cpu=0")
    s = tierload.Session(m, p)
    with s.acquire("diffusion") as w:
        assert set(w) == {t[0] for t in tensors}, set(w)
        for name, dt, shape, data, nbytes in tensors:
            if getattr(torch, TORCH_ATTR[dt], None) is not None:
                assert torch_bytes(w[name]) == data, name
                assert w[name].data_ptr() == m.raw(name).ctypes.data  # the mapping itself
    with s.acquire("diffusion", layers=2) as w:
        assert list(w) == [tensors[2][0]], list(w)
    s.prefetch("diffusion", layers=(0, 3))
    st = s.stats()
    assert st["loads"] >= 0 and "devices" in st
    s.check()
    try:
        s.acquire("nonsense")
        raise AssertionError("an unknown component did not fail")
    except tierload.InvalidArgument as e:
        assert "nonsense" in e.message
    # a simulated GPU: tensors on it come back as descriptors
    p2 = tierload.plan(m, sim="pysim0=64M", backend="diffusion=pysim0",
                       reserve="diffusion=1M")
    s2 = tierload.Session(m, p2)
    with s2.acquire("diffusion") as w:
        d = w[tensors[0][0]]
        assert isinstance(d, tierload.DeviceTensor) and d.device == "pysim0", d
        assert d.tier == "device" and d.nbytes == tensors[0][4]
    st = s2.stats()
    assert st["loads"] >= len(tensors), st
    assert st["devices"][0]["name"] == "pysim0", st["devices"]
    assert s2.evict("pysim0") == sum(t[4] for t in tensors)
    assert s2.events(), "no events"
    # misuse is refused: layers past the end, closing with a set outstanding
    try:
        s2.acquire("diffusion", layers=(0, len(tensors) + 1))
        raise AssertionError("layers past the end were accepted")
    except tierload.InvalidArgument as e:
        assert "layers" in e.message, e.message
    a = s2.acquire("diffusion", layers=0)
    try:
        s2.close()
        raise AssertionError("close with a set outstanding was accepted")
    except tierload.InvalidArgument as e:
        assert "outstanding" in e.message, e.message
    s2.check()
    a.release()
    a.release()  # released once only
    s2.close()
    # progress on a sim: bytes done of the bytes moved; returning False cancels
    calls = []
    s3 = tierload.Session(m, p2, progress=lambda done, total: calls.append((done, total)))
    with s3.acquire("diffusion"):
        pass
    moved = sum(t[4] for t in tensors)
    assert calls and calls[-1] == (moved, moved), (calls, moved)
    s3.evict("pysim0")
    s4 = tierload.Session(m, p2, progress=lambda done, total: False)
    try:
        s4.acquire("diffusion")
        raise AssertionError("a callback returning False did not cancel")
    except tierload.Cancelled:
        pass
    st = s4.stats()
    assert st["acquire_cancels"] == 1 and st["devices"][0]["used"] == 0, st
    s4.check()
    s4.cancel()  # nothing in flight: a no-op
    s4.check()


@case
def schedules_learned_and_declared():
    path, tensors, offs = dtype_model()
    m = tierload.open(path)
    p = tierload.plan(m, sim="pylearn=64M", backend="diffusion=pylearn", reserve="diffusion=1M")
    n = m.layer_count("diffusion")
    assert n >= 3, n
    with tierload.Session(m, p) as s:
        assert s.next_step() is None  # no schedule
        s.learn()
        for _ in range(2):
            for k in range(n):
                with s.acquire("diffusion", layers=k, with_other=False):
                    pass
        with s.acquire("diffusion", layers=0, with_other=False):
            pass  # the pass was confirmed by layer 1 of the second pass; layer 0 of the third
        assert s.next_step() == ("diffusion", (1, 2), False), s.next_step()
        s.set_loop([("diffusion", (0, 1), False), ("diffusion", (2, 3), False)])
        assert s.next_step() == ("diffusion", (0, 1), False), s.next_step()
        with s.acquire("diffusion", layers=2, with_other=False):
            pass  # skips layer 0's step: the loop moves on past it
        assert s.next_step() == ("diffusion", (0, 1), False), s.next_step()
        names = [tensors[2][0], tensors[0][0], tensors[2][0]]
        s.prefetch_tensors(names[:1])
        with s.acquire_tensors(names) as w:
            assert list(w) == [tensors[2][0], tensors[0][0]], list(w)  # each tensor once, in order
        # each set became a group (the one prefetched: 0); declaring the same tensors in another
        # order names it, and it is a loop's step
        g = s.group("seg", [tensors[0][0], tensors[2][0]])
        assert g == tierload.Group(1, "seg"), g
        s.set_loop([g, ("diffusion", (1, 2), False)])
        assert s.next_step() == g, s.next_step()
        s.prefetch(g)
        with s.acquire(g) as w:
            assert list(w) == [tensors[2][0], tensors[0][0]], list(w)
        assert s.next_step() == ("diffusion", (1, 2), False), s.next_step()
        s.set_priority(5)
        s.set_reserve("diffusion", 0)
        before = s.stats()["devices"][0]["used"]
        assert before > 0, s.stats()
        s.set_budget("pylearn", 1)  # smaller than any tensor: everything unreferenced goes
        assert s.stats()["devices"][0]["used"] == 0, s.stats()
        try:
            s.set_budget("nodevice", 1)
            raise AssertionError("an unknown device was accepted")
        except tierload.NotFound:
            pass
        s.set_budget("pylearn", 64 << 20)
        s.set_schedule([("diffusion", 1, False)])
        assert s.next_step() == ("diffusion", (1, 2), False), s.next_step()
        try:
            s.set_loop([("nonsense", 0)])
            raise AssertionError("an unknown component was accepted")
        except tierload.InvalidArgument:
            pass


@case
def writable_model_patches_stay_in_memory():
    path, tensors, offs = dtype_model()
    name, dt, shape, data, nbytes = [t for t in tensors if t[1] == "F32"][0]
    ro = tierload.open(path)
    try:
        ro.numpy(name, writable=True)
        raise AssertionError("a writable view of a read-only model did not fail")
    except tierload.InvalidArgument as e:
        assert "read-only" in e.message
    m = tierload.open(path, writable=True)
    p = tierload.plan(m, devices="cpu=0")
    s = tierload.Session(m, p)
    a = m.numpy(name)
    assert a.flags.writeable and m.patched(name)
    a[0, 0] = 42.0
    assert pread(path, offs[name], nbytes) == data  # the file never changes
    s.refresh(name)
    with s.acquire("diffusion") as w:
        assert float(w[name][0, 0]) == 42.0
    m.unpatch(name)
    s.refresh(name)
    with s.acquire("diffusion") as w:
        assert torch_bytes(w[name]) == data


@case
def memstats_fields():
    ms = tierload.memstats()
    for k in ("rss", "rss_anon", "rss_file", "uss", "peak_rss", "mem_available", "page_cache"):
        assert k in ms and ms[k] >= 0, (k, ms)
    assert ms["rss_anon"] == status_kb("RssAnon") or abs(ms["rss_anon"] - status_kb(
        "RssAnon")) < 64 * MiB


@case
def warm_pool_serves_the_next_load():
    # two files, each one 32 MiB tensor of known bytes: the second load draws from the pool
    paths, offs = [], []
    for i in range(2):
        p = os.path.join(TMP, "warm%d.safetensors" % i)
        offs.append(write_safetensors(p, [("w", "U8", (32 * MiB,), bytes([i + 1]) * (32 * MiB),
                                           32 * MiB)])["w"])
        paths.append(p)
    try:
        tierload.keep_warm(64 * MiB)
        before = tierload.warm_pool()
        assert before["bound"] == 64 * MiB, before
        r = tierload.load(paths[0], mode="buffered")
        del r
        gc.collect()
        held = tierload.warm_pool()
        assert 32 * MiB <= held["held"] <= 64 * MiB, held
        r = tierload.load(paths[1], mode="buffered")
        after = tierload.warm_pool()
        assert after["takes"] > held["takes"] and after["taken"] >= 32 * MiB + held["taken"], after
        assert r.numpy("w").tobytes() == pread(paths[1], offs[1], 32 * MiB)
        del r
        tierload.keep_warm(0)
        assert tierload.warm_pool()["held"] == 0
        try:
            tierload.keep_warm(-1)
            raise AssertionError("keep_warm(-1) accepted")
        except tierload.InvalidArgument:
            pass
    finally:
        tierload.keep_warm(0)


def torch_model(path, tensors, prefix=""):
    """A safetensors file of torch tensors {name: tensor} (names get prefix); returns offsets."""
    entries = []
    for name, t in tensors.items():
        dt = {v: k for k, v in TORCH_ATTR.items()}[str(t.dtype).split(".")[1]]
        b = torch_bytes(t)
        entries.append((prefix + name, dt, tuple(t.shape), b, len(b)))
    return write_safetensors(path, entries)


READ_ONLY_CHILD = r'''
import os, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch, torch.nn.functional as F
import tierload
path, name = sys.argv[2], sys.argv[3]
m = tierload.open(path)
a, t = m.numpy(name), m.torch(name)
refused = []
def expect(what, fn, exc):
    try:
        fn()
    except exc as e:
        refused.append(what)
        return
    print("NOT REFUSED: " + what)
expect("numpy item", lambda: a.__setitem__((0, 0), 1.0), ValueError)
expect("numpy writeable flag", lambda: setattr(a.flags, "writeable", True), ValueError)
expect("numpy raw", lambda: m.raw(name).__setitem__(0, 1), ValueError)
RO = tierload.ReadOnlyError
expect("add_", lambda: t.add_(1.0), RO)
expect("setitem", lambda: t.__setitem__(0, 5.0), RO)
expect("zero_ of a row", lambda: t[1].zero_(), RO)
expect("mul_ of .t()", lambda: t.t().mul_(2.0), RO)
expect("copy_ into .data", lambda: t.data.copy_(torch.zeros(t.shape)), RO)
expect("copy_ into detach()", lambda: t.detach().copy_(torch.zeros(t.shape)), RO)
expect("out=", lambda: torch.add(t, 1.0, out=t), RO)
expect("relu inplace", lambda: F.relu(t, inplace=True), RO)
expect("iadd", lambda: t.__iadd__(1.0), RO)
expect("view(-1).fill_", lambda: t.view(-1).fill_(3.0), RO)
expect("numpy() write", lambda: t.numpy().__setitem__((0, 0), 1.0), ValueError)
expect("np.asarray write", lambda: np.asarray(t).__setitem__((0, 0), 1.0), ValueError)
p = torch.nn.Parameter(t, requires_grad=False)
expect("Parameter.data.fill_", lambda: p.data.fill_(0.0), RO)
s = tierload.Session(m, tierload.plan(m, devices="cpu=0"))
with s.acquire("diffusion") as w:
    expect("acquired add_", lambda: w[name].add_(1.0), RO)
m2 = tierload.open(path)  # a view of a closed model: refused, not a fault on unmapped memory
v = m2.torch(name)
m2.close()
expect("use after close", lambda: v.sum(), tierload.UseAfterRelease)
print("refused %d" % len(refused))
print("sum %r" % float(t.double().sum()))
'''


@case
def read_only_views_refuse_writes_in_a_child():
    # writes into views of a read-only model raise, and so does a view used after close(); a
    # crash (SIGSEGV) of the child fails here
    path = os.path.join(TMP, "ro.safetensors")
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(7))
    offs = torch_model(path, {"w": w}, "model.diffusion_model.blocks.0.")
    name = "model.diffusion_model.blocks.0.w"
    r = subprocess.run([sys.executable, "-c", READ_ONLY_CHILD,
                        os.path.join(SRC, "bindings", "python"), path, name],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "NOT REFUSED" not in r.stdout, r.stdout
    assert "refused 18" in r.stdout, r.stdout
    assert "sum %r" % float(w.double().sum()) in r.stdout, (r.stdout, float(w.double().sum()))
    assert pread(path, offs[name], 240) == torch_bytes(w)  # nothing reached the file
    # writable=True: the same views patch in place, copy-on-write; results of ops are plain
    m = tierload.open(path, writable=True)
    t = m.torch(name)
    t.mul_(2.0)
    assert torch.equal(t, w * 2) and pread(path, offs[name], 240) == torch_bytes(w)
    ro = tierload.open(path).torch(name)
    assert isinstance(ro, tierload.ReadOnlyTensor)
    y = ro @ torch.ones(10)
    assert type(y) is torch.Tensor and torch.equal(y, w @ torch.ones(10))
    y.add_(1.0)  # a result owns its memory


@case
def use_after_release_raises():
    path = os.path.join(TMP, "uar.safetensors")
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    torch_model(path, {"w": w}, "model.diffusion_model.blocks.0.")
    name = "model.diffusion_model.blocks.0.w"
    m = tierload.open(path)
    s = tierload.Session(m, tierload.plan(m, devices="cpu=0"))
    a = s.acquire("diffusion")
    t = a.tensors[name]
    row, c = t[1], t.clone()
    assert torch.equal(t, w) and torch.equal(row, w[1])
    a.release()
    for what, fn in (("sum", lambda: t.sum()), ("matmul", lambda: torch.ones(8) @ t.t()),
                     ("a view", lambda: row + 1), ("shape", lambda: t.shape),
                     ("F.linear", lambda: torch.nn.functional.linear(torch.ones(8), t))):
        try:
            fn()
            raise AssertionError("%s after release did not raise" % what)
        except tierload.UseAfterRelease as e:
            assert name in e.message, e
    assert torch.equal(c, w)  # a copy made before is the caller's


@case
def sims_belong_to_their_plan():
    # two plans simulate a GPU of the same name: each session gets its own sim's capacity
    path = os.path.join(TMP, "sims.safetensors")
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(5))  # 512 bytes
    torch_model(path, {"w": w}, "model.diffusion_model.blocks.0.")
    name = "model.diffusion_model.blocks.0.w"
    m = tierload.open(path)
    plans = [tierload.plan(m, sim="pysimx=768", backend="diffusion=pysimx",
                           reserve="diffusion=1") for _ in range(2)]
    sessions = [tierload.Session(m, p) for p in plans]
    sets = [s.acquire("diffusion") for s in sessions]  # 2 x 512 bytes: one 768-byte sim each
    for a in sets:
        d = a.tensors[name]
        assert isinstance(d, tierload.DeviceTensor) and d.device == "pysimx" and d.kind == "sim"
        assert torch.equal(d.to_host(), w)
        try:
            d.__dlpack__()
            raise AssertionError("DLPack of a sim handle did not fail")
        except tierload.Unsupported as e:
            assert "to_host" in e.message
    for s in sessions:
        st = s.stats()
        dev = [x for x in st["devices"] if x["name"] == "pysimx"]
        assert dev and dev[0]["used"] == 512 and dev[0]["budget"] <= 768, st["devices"]
    # the sims are not left in the process's registry
    import ctypes
    d = ctypes.c_void_p()
    assert tierload._lib.lib.tl_device_find(b"pysimx", ctypes.byref(d)) != 0
    for a in sets:
        a.release()


@case
def dlpack_device_tensor_matmul():
    # weights copied to ggml's CPU device (handles are host addresses): torch computes on them
    # through DLPack without a copy, and gets what it gets from the original weights
    try:
        tierload.ggml_discover()
    except tierload.NotFound as e:
        skip("dlpack_device_tensor_matmul", "no ggml: %s" % e.message)
        return
    path = os.path.join(TMP, "dl.safetensors")
    g = torch.Generator().manual_seed(11)
    w = {"a": torch.randn(24, 40, generator=g),
         "b": torch.randn(40, generator=g).to(torch.bfloat16),
         "c": torch.randint(-5, 5, (3, 7), generator=g, dtype=torch.int32)}
    torch_model(path, w, "model.diffusion_model.blocks.0.")
    pre = "model.diffusion_model.blocks.0."
    m = tierload.open(path)
    p = tierload.plan(m, backend="diffusion=ggml:CPU", reserve="diffusion=1")
    s = tierload.Session(m, p, no_zero_copy=True)
    x = torch.randn(40, 5, generator=g)
    base = tierload._dlpack.live_count()
    with s.acquire("diffusion") as ws:
        d = ws[pre + "a"]
        assert isinstance(d, tierload.DeviceTensor) and d.tier == "device", d
        assert d.device == "ggml:CPU" and d.host_pointer and d.__dlpack_device__() == (1, 0)
        assert d.dptr != m.raw(pre + "a").ctypes.data  # the device's copy, not the mapping
        t = torch.from_dlpack(d)
        assert t.data_ptr() == d.dptr and t.shape == (24, 40) and t.dtype == torch.float32
        assert torch.equal(t @ x, w["a"] @ x)
        tb, tc = torch.from_dlpack(ws[pre + "b"]), torch.from_dlpack(ws[pre + "c"])
        assert torch.equal(tb, w["b"]) and torch.equal(tc, w["c"])
        assert tierload._dlpack.live_count() == base + 3
        del tb, tc  # torch calls the deleters: the exports let go of their owners
        assert tierload._dlpack.live_count() == base + 1
        cap = d.__dlpack__()  # a capsule never consumed is freed with its tensor
        assert tierload._dlpack.live_count() == base + 2
        del cap, t
        gc.collect()
        assert tierload._dlpack.live_count() == base
    # a CUDA device tensor describes itself with __cuda_array_interface__ (no GPU needed)
    ct = object.__new__(tierload.DeviceTensor)
    for k, v in dict(name="w", dtype="F16", shape=(4, 6), tier="device", device="cuda1",
                     dptr=0x7f0000001000, offset=0, nbytes=48, row_begin=0, row_end=4,
                     kind="cuda", host_pointer=False, _dev=None, _owner=None,
                     _guard=None).items():
        setattr(ct, k, v)
    assert ct.__cuda_array_interface__ == {"shape": (4, 6), "typestr": "<f2",
                                           "data": (0x7f0000001000, True), "strides": None,
                                           "version": 3, "stream": None}
    assert ct.__dlpack_device__() == (2, 1)


def lora_file(path, target, down, up, alpha):
    torch_model(path, {target + ".lora_down.weight": down, target + ".lora_up.weight": up,
                       target + ".alpha": torch.tensor([alpha], dtype=torch.float32)})


@case
def lora_set_add_rescale_remove_on_a_session():
    path = os.path.join(TMP, "lmodel.safetensors")
    g = torch.Generator().manual_seed(21)
    W = torch.randn(8, 16, generator=g)
    pre = "model.diffusion_model.blocks.0."
    torch_model(path, {"attn.weight": W}, pre)
    name = pre + "attn.weight"
    lp = os.path.join(TMP, "l1.safetensors")
    down, up = torch.randn(2, 16, generator=g), torch.randn(8, 2, generator=g)
    lora_file(lp, pre + "attn", down, up, 4.0)
    delta = (4.0 / 2) * (up.double() @ down.double())  # alpha / rank, computed here in F64
    m = tierload.open(path, writable=True)
    s = tierload.Session(m, tierload.plan(m, devices="cpu=0"))
    ls = tierload.LoraSet(m, s)
    lora, rep = ls.add(lp, 1.0)
    assert rep["matched"] == 1 and rep["unmatched"] == 0 and len(lora) == 1, rep
    with s.acquire("diffusion") as ws:
        assert torch.allclose(ws[name].double(), W.double() + delta, rtol=1e-6, atol=1e-5)
        try:
            ls.rescale(lora, 0.5)
            raise AssertionError("a rescale with the tensor acquired was accepted")
        except tierload.InvalidArgument:
            pass
    ls.rescale(lora, 0.5)
    with s.acquire("diffusion") as ws:
        assert torch.allclose(ws[name].double(), W.double() + 0.5 * delta, rtol=1e-6, atol=1e-5)
    assert ls.loras == [(lora, 0.5)]
    ls.remove(lora)
    with s.acquire("diffusion") as ws:
        assert torch.equal(ws[name], W)  # the file's bytes again
    assert ls.loras == []
    try:
        ls.remove(lora)
        raise AssertionError("removing a LoRA not in the set was accepted")
    except tierload.NotFound:
        pass
    assert lora.match(m)["matched"] == 1


@case
def lora_at_load_and_converting_session():
    # at load on a read-only model: the same F16 bytes as the merged set of a writable copy,
    # a rescale reloads the one touched tensor; a session keeping F16 weights as F32
    path = os.path.join(TMP, "alm.safetensors")
    g = torch.Generator().manual_seed(33)
    pre = "model.diffusion_model.blocks.0."
    W = torch.randn(32, 64, generator=g).to(torch.float16)
    V = torch.randn(32, 64, generator=g).to(torch.float16)
    torch_model(path, {"attn.weight": W, "other.weight": V}, pre)
    name, other = pre + "attn.weight", pre + "other.weight"
    lp = os.path.join(TMP, "al1.safetensors")
    lora_file(lp, pre + "attn", torch.randn(4, 64, generator=g), torch.randn(32, 4, generator=g),
              2.0)
    mw = tierload.open(path, writable=True)
    eager = tierload.LoraSet(mw)
    lora, _ = eager.add(lp, 0.7)
    want = mw.torch(name).clone()
    eager.rescale(lora, -1.5)
    want2 = mw.torch(name).clone()
    m = tierload.open(path)
    p = tierload.plan(m, sim="alsim=64M", backend="diffusion=alsim", reserve="diffusion=0")
    s = tierload.Session(m, p)
    ls = tierload.LoraSet(m, s, at_load=True)
    l2, rep = ls.add(lp, 0.7)
    assert rep["matched"] == 1, rep
    with s.acquire("diffusion") as ws:
        assert torch.equal(ws[name].to_host(), want)
        assert torch.equal(ws[other].to_host(), V)
    loads = s.stats()["loads"]
    ls.rescale(l2, -1.5)
    with s.acquire("diffusion") as ws:
        assert torch.equal(ws[name].to_host(), want2)
    st = s.stats()
    assert st["loads"] == loads + 1 and st["lora_reloads"] == 1 and st["lora_loads"] == 2, st
    ls.close()
    s.close()
    # on_device on a sim (it does not compute): merged on the host, the same bytes
    s = tierload.Session(m, p)
    ls = tierload.LoraSet(m, s, at_load=True, on_device=True)
    ls.add(lp, 0.7)
    with s.acquire("diffusion") as ws:
        assert torch.equal(ws[name].to_host(), want)
    # the ctypes stats reach the C struct's last field: poisoned, then written by the library
    import ctypes
    from tierload import _lib as L
    raw = L.SessionStats()
    ctypes.memset(ctypes.byref(raw), 0xFF, ctypes.sizeof(raw))
    assert L.lib.tl_session_stats_get(s.handle, ctypes.byref(raw), ctypes.sizeof(raw)) == 0
    assert raw.lora_loads == 1 and raw.lora_device_merges == 0, (raw.lora_loads,
                                                                 raw.lora_device_merges)
    assert s.stats()["lora_device_merges"] == 0
    ls.close()
    s.close()
    s = tierload.Session(m, p, dtype="F32")
    with s.acquire("diffusion") as ws:
        t = ws[other]
        assert t.dtype == "F32", t.dtype
        assert torch.equal(t.to_host(), V.float())
    s.set_dtype(other, "BF16")
    with s.acquire("diffusion") as ws:
        assert torch.equal(ws[other].to_host(), V.float().to(torch.bfloat16))
    s.close()


@case
def free_memory_needs_the_library_function():
    # the Unsupported fallback always; the eviction where the library exports the function
    from tierload import _lib as L
    real = L.optional
    try:
        L.optional = lambda name, res, args: None  # a library without tl_device_make_room
        try:
            tierload.free_memory(1 << 20, "cpu")
            raise AssertionError("free_memory without the C function did not raise")
        except tierload.Unsupported as e:
            assert "tl_device_make_room" in e.message, e
    finally:
        L.optional = real
    path = os.path.join(TMP, "fm.safetensors")
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(9))  # 512 bytes
    torch_model(path, {"w": w}, "model.diffusion_model.blocks.0.")
    m = tierload.open(path)
    p = tierload.plan(m, sim="fmsim=4K", backend="diffusion=fmsim", reserve="diffusion=1")
    s = tierload.Session(m, p)
    with s.acquire("diffusion"):
        pass
    if getattr(L.lib, "tl_device_make_room", None) is None:
        try:
            tierload.free_memory(4096, "fmsim", plan=p)
            raise AssertionError("free_memory without tl_device_make_room did not raise")
        except tierload.Unsupported:
            pass
        return
    # a library with it: the plan's sim is found and the unreferenced 512 bytes are evicted
    assert tierload.free_memory(4000, "fmsim", plan=p) == 512
    assert [d["used"] for d in s.stats()["devices"] if d["name"] == "fmsim"] == [0]
    try:
        tierload.free_memory(1 << 30, "fmsim", plan=p)
        raise AssertionError("room beyond the sim's capacity was reported made")
    except tierload.DeviceOOM:
        pass


class TinyNet(torch.nn.Module if torch is not None else object):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.fc2 = torch.nn.Linear(32, 8)
        self.bn = torch.nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.fc2(torch.nn.functional.gelu(self.norm(self.fc1(x)))))


@case
def fill_module_zero_copy_equals_torch_load():
    torch.manual_seed(4)
    src = TinyNet()
    with torch.no_grad():
        src.bn.running_mean.normal_()
        src.bn.running_var.uniform_(0.5, 2.0)
        src.norm.weight.normal_()
    pt = os.path.join(TMP, "tiny.pt")
    torch.save(src.state_dict(), pt)
    path = os.path.join(TMP, "tiny.safetensors")
    pre = "model.diffusion_model."
    torch_model(path, src.state_dict(), pre)
    ref = TinyNet().eval()
    ref.load_state_dict(torch.load(pt))
    net = TinyNet().eval()
    m = tierload.open(path)
    r = tierload.fill_module(net, m, prefix=pre)
    assert len(r["filled"]) == len(src.state_dict()) and r["missing"] == [], r
    for n, p in net.named_parameters():
        assert isinstance(p, torch.nn.Parameter) and p.data_ptr() == m.raw(pre + n).ctypes.data
    assert net.bn.running_var.data_ptr() == m.raw(pre + "bn.running_var").ctypes.data
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))
    try:
        net.fc1.weight.add_(1.0)
        raise AssertionError("a write into a filled parameter of a read-only model passed")
    except tierload.ReadOnlyError:
        pass
    # a name map, from an acquired set
    class Renamed(TinyNet):
        pass
    names = {"fc1.weight": "in_proj.w", "fc1.bias": "in_proj.b"}
    path2 = os.path.join(TMP, "tiny2.safetensors")
    sd = {names.get(k, k): v for k, v in src.state_dict().items()}
    torch_model(path2, sd, pre)
    m2 = tierload.open(path2)
    s = tierload.Session(m2, tierload.plan(m2, devices="cpu=0"))
    net2 = Renamed().eval()
    with s.acquire("diffusion") as ws:
        tierload.fill_module(net2, ws, name_map=names, prefix=pre)
        with torch.no_grad():
            assert torch.equal(net2(x), ref(x))
    try:
        net2(x)
        raise AssertionError("a module filled from a released set ran")
    except tierload.UseAfterRelease:
        pass
    with s.acquire("diffusion") as ws:  # a module whose set was released is filled again
        tierload.fill_module(net2, ws, name_map=names, prefix=pre)
        with torch.no_grad():
            assert torch.equal(net2(x), ref(x))
    # checks name the tensor, and nothing is replaced when one fails
    bad = TinyNet()
    bad.fc2 = torch.nn.Linear(32, 9)
    before = bad.fc1.weight
    try:
        tierload.fill_module(bad, m, prefix=pre)
        raise AssertionError("a shape mismatch was accepted")
    except tierload.InvalidArgument as e:
        assert "fc2.weight" in e.message and "[8, 32]" in e.message, e
    assert bad.fc1.weight is before
    try:
        tierload.fill_module(TinyNet(), m)  # no prefix: nothing found
        raise AssertionError("missing tensors were accepted with strict=True")
    except tierload.NotFound as e:
        assert "fc1.weight" in e.message
    r = tierload.fill_module(TinyNet(), m, name_map=lambda n: None if n.startswith("bn.") else n,
                             prefix=pre)
    assert not any(n.startswith("bn.") for n in r["filled"]) and r["missing"] == []
    try:
        tierload.fill_module(TinyNet().half(), m, prefix=pre)
        raise AssertionError("a dtype mismatch was accepted")
    except tierload.InvalidArgument as e:
        assert "dtype" in e.message
    # writable model: the module may patch its weights in place (copy-on-write)
    mw = tierload.open(path, writable=True)
    net3 = TinyNet().eval()
    tierload.fill_module(net3, mw, prefix=pre)
    with torch.no_grad():
        net3.fc1.weight.mul_(0.5)
    assert torch.equal(mw.torch(pre + "fc1.weight"), src.fc1.weight.detach() * 0.5)
    assert mw.patched(pre + "fc1.weight")


@case
def pipeline_example_bit_equal():
    ex = os.path.join(SRC, "examples", "python", "pipeline.py")
    r = subprocess.run([sys.executable, ex, "--small", "--dir", TMP], capture_output=True,
                       text=True, timeout=300)
    print("  " + r.stdout.strip().replace("\n", "\n  "))
    assert r.returncode == 0, r.stderr
    assert "outputs bit-equal: yes" in r.stdout, r.stdout


@case
def pip_installs_the_package():
    target = os.path.join(TMP, "site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                        "--no-deps", "--no-index", "--target", target,
                        os.path.join(SRC, "bindings", "python")],
                       capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, PIP_BREAK_SYSTEM_PACKAGES="1",
                                HOME=TMP, PIP_NO_CACHE_DIR="1"))
    if r.returncode != 0 and "No module named pip" in r.stderr:
        skip("pip_installs_the_package", "no pip for %s" % sys.executable)
        return
    assert r.returncode == 0, r.stderr
    code = "import tierload, sys; print(tierload.__file__, tierload.version())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=target), cwd=TMP)
    assert r.returncode == 0 and r.stdout.startswith(target), (r.stdout, r.stderr)


if __name__ == "__main__":
    print("tierload %s from %s, torch %s, numpy %s" % (
        tierload.version(), os.environ.get("TIERLOAD_LIBRARY", "(search)"), torch.__version__,
        np.__version__))
    only = sys.argv[2:] if len(sys.argv) > 2 else None
    for fn in CASES:
        if only is None or fn.__name__ in only:
            fn()
    import shutil
    shutil.rmtree(TMP, ignore_errors=True)
    if FAILED:
        print("FAILED: " + ", ".join(FAILED))
        sys.exit(1)
    if SKIPPED:
        print("SKIPPED: " + ", ".join(SKIPPED))
        sys.exit(1 if os.environ.get("CI") in ("true", "1") else 77)
    print("all Python tests passed")
