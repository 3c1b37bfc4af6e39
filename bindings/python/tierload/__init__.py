"""tierload — Python binding of libtierload (ctypes; numpy and torch are optional imports).

    import tierload
    m = tierload.open("model.safetensors", vae="vae.safetensors")
    w = m.torch("model.diffusion_model.blocks.0.w")     # zero-copy view of the mapping
    p = tierload.plan(m, devices="cpu", sim=None)       # sim="gpu0=8G": this plan's own sims
    with tierload.Session(m, p) as s, s.acquire("diffusion") as weights:
        ...                                              # weights: name -> tensor where it lives
        tierload.fill_module(unet, weights, prefix="model.diffusion_model.")   # zero-copy
    ls = tierload.LoraSet(mw, s)        # mw opened writable=True, s a session of it
    lora, report = ls.add("style.safetensors", 0.8); ls.rescale(lora, 0.5); ls.remove(lora)
    tierload.free_memory(2 << 30, "cuda0")               # evict to make room (newer libraries)
    t2 = tierload.spill(t)                               # same tensor, backed by an unnamed file
    tierload.memstats()

Writes never crash the process. Views of a model opened read-only, and the tensors a session
hands out, are read-only: numpy arrays have writeable=False (and it cannot be switched back);
torch has no read-only tensors, so they are ReadOnlyTensor, a torch.Tensor subclass on which an
in-place op, out=, item assignment or inplace=True raises ReadOnlyError before any byte is
touched (views of it, .data and .detach() included; results of ops are plain tensors, deep
copies own their memory). Open with writable=True to patch weights in place: its views are
plain tensors over a copy-on-write mapping (the file never changes), which is what a program
that patches weights in place (ComfyUI's LoRA patcher) wants.

An acquired set's torch tensors and DeviceTensors raise UseAfterRelease on any use after
release (views of them too), and so do read-only torch views of a model after Model.close().
Not guarded: numpy arrays, raw pointers (data_ptr()), DLPack exports, and writable views after
Model.close().

DeviceTensor exports DLPack where its handles are host addresses (ggml:CPU: kDLCPU) or CUDA
pointers (kDLCUDA, plus __cuda_array_interface__), so torch.from_dlpack computes on it in
place; to_host() copies the bytes out of any device (sims included).
"""
import collections
import ctypes
import os
import threading
import weakref

from . import _dlpack, _errors, _views
from ._views import ReadOnlyTensor, ReadOnlyError, UseAfterRelease
from ._errors import (Error, InvalidArgument, IOError, FormatError, NoMemory, NotFound,
                      Unsupported, DeviceOOM, DeviceError, Cancelled, Infeasible, Changed,
                      IntegrityError, check, error_for)
from ._lib import lib, ALL_LAYERS, NOT_FOUND
from . import _lib as L

__all__ = ["open", "load", "plan", "Session", "spill", "memstats", "keep_warm", "warm_pool",
           "version", "Model", "Lora", "LoraSet", "free_memory", "fill_module", "ggml_discover",
           "ReadOnlyTensor", "ReadOnlyError", "UseAfterRelease",
           "TensorInfo", "Plan", "LoadResult", "DeviceTensor", "Error", "InvalidArgument",
           "IOError", "FormatError", "NoMemory", "NotFound", "Unsupported", "DeviceOOM",
           "DeviceError", "Cancelled", "Infeasible", "Changed", "IntegrityError"]

# the prefixes stable-diffusion.cpp gives to separately passed component files
COMPONENT_PREFIXES = {
    "diffusion_model": "model.diffusion_model.", "model": "", "vae": "first_stage_model.",
    "clip_l": "text_encoders.clip_l.", "clip_g": "text_encoders.clip_g.",
    "t5xxl": "text_encoders.t5xxl.", "llm": "text_encoders.llm.",
}

_open_models = weakref.WeakSet()
_BIND_LOCK = threading.Lock()


def _b(s):
    return None if s is None else os.fsencode(s) if not isinstance(s, bytes) else s


def _s(b):
    return b.decode("utf-8", "replace") if b is not None else None


def version():
    return _s(lib.tl_version())


def _dtype_name(d):
    return _s(lib.tl_dtype_name(d)) or "dtype(%d)" % d


def _component(c):
    if isinstance(c, int):
        return c
    v = lib.tl_component_from_name(_b(c))
    if v < 0:
        raise InvalidArgument("unknown component '%s' (diffusion, cond, vae, controlnet, other, "
                              "diffusion2, or an alias such as unet, clip, te)" % c)
    return v


class TensorInfo:
    """One tensor of a model's catalog."""
    __slots__ = ("index", "name", "dtype", "shape", "component", "layer", "nbytes", "offset",
                 "file")

    def __init__(self, index, info):
        self.index = index
        self.name = _s(info.name)
        self.dtype = _dtype_name(info.dtype)
        self.shape = tuple(info.shape[i] for i in range(info.n_dims))
        self.component = _s(lib.tl_component_name(info.component))
        self.layer = info.layer if info.layer >= 0 else None
        self.nbytes = info.nbytes
        self.offset = info.offset
        self.file = info.file

    def __repr__(self):
        return "TensorInfo(%r, %s%s, %s, layer=%s, %d bytes)" % (
            self.name, self.dtype, list(self.shape), self.component, self.layer, self.nbytes)


class Model:
    """An open model (tierload.open): the catalog over one mapping per file."""

    def __init__(self, paths, writable=False, prefixes=None, map_flags=None, components=None):
        self._h = None
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise InvalidArgument("open: no path given")
        arr = (ctypes.c_char_p * len(paths))(*[_b(p) for p in paths])
        o = L.ModelOptions()
        lib.tl_model_options_init(ctypes.byref(o))
        o.writable = bool(writable)
        if map_flags:
            fl = ctypes.c_uint()
            check(lib.tl_parse_map_flags(_b(map_flags), ctypes.byref(fl)))
            o.map_flags = fl.value
        if prefixes and any(prefixes):
            self._prefix_arr = (ctypes.c_char_p * len(paths))(*[_b(p) if p else None
                                                                  for p in prefixes])
            o.prefixes = ctypes.cast(self._prefix_arr, ctypes.POINTER(ctypes.c_char_p))
        if components:  # "high.=diffusion,low.=diffusion2": name rules before the built-in ones
            self._components = _b(components)
            o.components = self._components
        h = ctypes.c_void_p()
        check(lib.tl_model_open(arr, len(paths), ctypes.byref(o), ctypes.byref(h)))
        self._h = h
        self.writable = bool(writable)
        self.paths = paths
        n = lib.tl_model_tensor_count(h)
        self.tensors = [TensorInfo(i, lib.tl_model_tensor(h, i).contents) for i in range(n)]
        self._by_name = {t.name: t for t in self.tensors}
        self.files = []
        for i in range(lib.tl_model_file_count(h)):
            f = lib.tl_model_file(h, i).contents
            self.files.append({"path": _s(f.path), "format": "gguf" if f.format == 0 else
                               "safetensors", "size": f.size, "n_tensors": f.n_tensors})
        self._finalizer = weakref.finalize(self, lib.tl_model_close, h)
        self._guard = _views.Guard("model")  # closed by close(): read-only torch views raise
        _open_models.add(self)

    @property
    def handle(self):
        if self._h is None or not self._finalizer.alive:
            raise InvalidArgument("the model is closed")
        return self._h

    def close(self):
        """Unmap now. Read-only torch views of the model raise UseAfterRelease on any use
        after; numpy views and writable views must not be used after (they would fault).
        Without close() the model stays open as long as it or any view of it is referenced."""
        self._guard.close()
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __len__(self):
        return len(self.tensors)

    def __contains__(self, name):
        return name in self._by_name

    def info(self, name):
        t = self._by_name.get(name) if isinstance(name, str) else self.tensors[name]
        if t is None:
            raise NotFound("model: no tensor named '%s'" % name)
        return t

    def _addr(self, t, writable):
        h = self.handle
        if writable:
            if not self.writable:
                raise InvalidArgument("model: tensor '%s': the model was opened read-only (open "
                                      "with writable=True to patch)" % t.name)
            return lib.tl_model_tensor_data_mut(h, t.index)
        return lib.tl_model_tensor_data(h, t.index)

    def numpy(self, name, writable=None):
        """Zero-copy numpy view of a tensor's bytes in the mapping. A writable view (the
        default of a model opened writable=True) marks the tensor patched: from then on the
        library reads its bytes from the mapping, never the file."""
        t = self.info(name)
        w = self.writable if writable is None else writable
        return _views.numpy_view(self._addr(t, w), t.nbytes, t.dtype, t.shape, self, w,
                                 "tensor '%s'" % t.name)

    def torch(self, name, writable=None):
        """Zero-copy torch view of a tensor's bytes in the mapping."""
        t = self.info(name)
        w = self.writable if writable is None else writable
        return _views.torch_view(self._addr(t, w), t.nbytes, t.dtype, t.shape, self, w,
                                 "tensor '%s'" % t.name, guard=None if w else self._guard)

    def raw(self, name):
        """The tensor's bytes as a read-only uint8 numpy view (any dtype, quantized included)."""
        t = self.info(name)
        return _views.byte_array(self._addr(t, False), t.nbytes, self, False)

    def read(self, name, offset=0, n=None):
        """Copy bytes of a tensor out of the mapping safely (a shrunk file raises Changed)."""
        t = self.info(name)
        n = t.nbytes - offset if n is None else n
        buf = ctypes.create_string_buffer(max(n, 1))
        check(lib.tl_model_tensor_read(self.handle, t.index, offset, buf, n))
        return buf.raw[:n]

    def patched(self, name):
        return bool(lib.tl_model_tensor_patched(self.handle, self.info(name).index))

    def unpatch(self, name):
        check(lib.tl_model_tensor_unpatch(self.handle, self.info(name).index))

    def advise(self, hints):
        """Page-cache hints on every mapping now: "sequential", "willneed", "dontneed"."""
        fl = ctypes.c_uint()
        check(lib.tl_parse_map_flags(_b(hints), ctypes.byref(fl)))
        check(lib.tl_model_advise(self.handle, fl.value))

    def layer_count(self, component):
        return lib.tl_model_layer_count(self.handle, _component(component))

    def layer_key(self, component, k):
        """The key of layer k (compute order): "model.diffusion_model.input_blocks.4"; None."""
        key = lib.tl_model_layer_key(self.handle, _component(component), k)
        return key.decode("utf-8", "replace") if key is not None else None

    def layer_find(self, component, key):
        """The layer whose key is key (or its unique tail after a dot); None when none."""
        k = lib.tl_model_layer_find(self.handle, _component(component), _b(key))
        return None if k == NOT_FOUND else k

    def page_cache(self):
        """Bytes of the model's files resident in the page cache now."""
        total = 0
        for i, f in enumerate(self.files):
            frac = ctypes.c_double()
            check(lib.tl_model_file_residency(self.handle, i, ctypes.byref(frac)))
            total += int(frac.value * f["size"])
        return total


def open(path_or_paths, writable=False, map_flags=None, components=None, **component_files):
    """Open model files into one catalog. Keyword arguments add component files with the
    prefixes stable-diffusion.cpp gives them (vae=, clip_l=, clip_g=, t5xxl=, llm=,
    diffusion_model=). components: name rules tried first ("high.=diffusion,low.=diffusion2":
    two diffusion models of one catalog, the second run after the first)."""
    if isinstance(path_or_paths, (str, bytes, os.PathLike)):
        paths = [path_or_paths]
    else:
        paths = list(path_or_paths or [])
    prefixes = [None] * len(paths)
    for key, p in component_files.items():
        if key not in COMPONENT_PREFIXES:
            raise InvalidArgument("open: unknown component file '%s' (known: %s)"
                                  % (key, ", ".join(sorted(COMPONENT_PREFIXES))))
        paths.append(p)
        prefixes.append(COMPONENT_PREFIXES[key] or None)
    return Model(paths, writable=writable, prefixes=prefixes, map_flags=map_flags,
                 components=components)


class LoadResult:
    """Tensors loaded into host memory (tierload.load): a mapping name -> torch tensor (numpy
    array without torch). Copies are owned by the result; every tensor keeps it alive."""

    def __init__(self, model, h, names):
        self.model = model
        self._h = h
        self._names = names
        self._finalizer = weakref.finalize(self, lib.tl_load_result_destroy, h)
        st = lib.tl_load_result_stats(h).contents
        self.stats = {k: getattr(st, k) for k in ("bytes", "bytes_out", "dest_bytes",
                                                  "staging_bound", "staging_used", "threads",
                                                  "seconds", "read_seconds")}
        self.stats["rss_anon_peak"] = st.mem.rss_anon_peak
        self.stats["rss_peak"] = st.mem.rss_peak
        self.files = []
        for i in range(lib.tl_load_result_file_count(h)):
            f = lib.tl_load_result_file(h, i).contents
            self.files.append({"path": _s(f.path), "mode": _s(lib.tl_load_mode_name(f.mode)),
                               "reason": _s(f.reason), "bytes": f.bytes, "seconds": f.seconds})
        self.notes = _s(lib.tl_load_result_notes(h)) or ""

    def _get(self, name, as_numpy):
        t = self.model.info(name)
        lt = lib.tl_load_result_tensor(self._h, t.index)
        if not lt or not lt.contents.data:
            raise NotFound("load: tensor '%s' was not loaded" % name)
        lt = lt.contents
        fn = _views.numpy_view if as_numpy else _views.torch_view
        return fn(lt.data, lt.nbytes, _dtype_name(lt.dtype), t.shape, self, not lt.view,
                  "tensor '%s'" % name)

    def numpy(self, name):
        return self._get(name, True)

    def torch(self, name):
        return self._get(name, False)

    def __getitem__(self, name):
        return self._get(name, _views.torch is None)

    def keys(self):
        return list(self._names)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def items(self):
        return [(n, self[n]) for n in self._names]


def load(path_or_model, mode="auto", dtype=None, verify=False, evict=False, progress=None,
         threads=0, staging_size=0, staging_count=0, tensors=None, align=0, type_rules=None,
         **component_files):
    """Load tensors into host memory (the modes of `tierload load`: auto, mmap, buffered,
    direct). dtype converts float tensors on load ("F16", "BF16", "F32"). progress(done, total)
    is called about every 50 ms; returning False cancels (Cancelled)."""
    model = path_or_model if isinstance(path_or_model, Model) else open(path_or_model,
                                                                        **component_files)
    o = L.LoadOptions()
    lib.tl_load_options_init(ctypes.byref(o))
    m = lib.tl_load_mode_from_name(_b(mode))
    if m < 0:
        raise InvalidArgument("load: unknown mode '%s' (auto, mmap, buffered, direct)" % mode)
    o.mode = m
    if dtype is not None:
        d = lib.tl_dtype_from_name(_b(str(dtype)))
        if d < 0:
            raise InvalidArgument("load: unknown dtype '%s'" % dtype)
        o.convert, o.dtype = True, d
    o.verify, o.evict = bool(verify), bool(evict)
    rules = _b(type_rules)  # kept alive for the call
    o.type_rules = rules
    o.threads, o.staging_size, o.staging_count, o.align = threads, staging_size, staging_count, align
    raised = []
    if progress is not None:
        def cb(_user, done, total):
            try:
                r = progress(done, total)
                return r is None or bool(r)
            except BaseException as e:  # re-raised after the load stops
                raised.append(e)
                return False
        o.progress = L.PROGRESS_FN(cb)
    names = [t.name for t in model.tensors]
    if tensors is not None:
        idx = [model.info(n).index for n in tensors]
        names = [model.tensors[i].name for i in idx]
        arr = (ctypes.c_size_t * max(len(idx), 1))(*idx)
        o.tensors, o.n_tensors = ctypes.cast(arr, ctypes.POINTER(ctypes.c_size_t)), len(idx)
    h = ctypes.c_void_p()
    st = lib.tl_model_load(model.handle, ctypes.byref(o), ctypes.byref(h))
    if raised:
        raise raised[0]
    check(st)
    return LoadResult(model, h, names)


def _make_sims(spec):
    """Unregistered sim devices from a sim spec (one reference each)."""
    specs = (L.SimSpec * L.TL_PLAN_MAX_DEVICES)()
    n = ctypes.c_size_t()
    check(lib.tl_parse_sim_spec(_b(spec), specs, L.TL_PLAN_MAX_DEVICES, ctypes.byref(n)))
    out = []
    try:
        for i in range(n.value):
            d = ctypes.c_void_p()
            check(lib.tl_device_sim_create(ctypes.byref(specs[i]), ctypes.byref(d)))
            out.append(d)
    except BaseException:
        _release_devices(out)
        raise
    return out


def _release_devices(devs):
    for d in devs:
        lib.tl_device_release(d)


class Plan:
    """A plan (tierload.plan): .feasible, .error, .json, .text. A plan made with sim= owns its
    simulated GPUs (.sims): they are not in the process's device registry, so another plan may
    simulate devices of the same names; the sessions of this plan share them."""

    def __init__(self, h, sims=()):
        self._h = h
        self.sims = list(sims)  # tl_device pointers, one reference each
        self._finalizer = weakref.finalize(self, lib.tl_plan_destroy, h)
        self._sims_finalizer = weakref.finalize(self, _release_devices, self.sims)

    @property
    def handle(self):
        return self._h

    @property
    def feasible(self):
        return bool(lib.tl_plan_feasible(self._h))

    @property
    def error(self):
        return _s(lib.tl_plan_error(self._h))

    def _owned_text(self, fn):
        out = ctypes.c_void_p()
        check(fn(self._h, ctypes.byref(out)))
        try:
            return ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            lib.tl_free(out)

    @property
    def json(self):
        return self._owned_text(lib.tl_plan_to_json)

    @property
    def text(self):
        return self._owned_text(lib.tl_plan_to_text)

    @property
    def devices(self):
        return [_s(lib.tl_plan_device_of(self._h, i).contents.name)
                for i in range(lib.tl_plan_device_count(self._h))]

    def __repr__(self):
        return "Plan(feasible=%s)" % self.feasible


def plan(model, devices=None, sim=None, backend=None, max_vram=None, headroom=0, reserve=None,
         phases=None, steps=0, offload_to_cpu=False, output_size=None, steps2=0,
         overrides=None, type_rules=None):
    """Plan where each component lives. devices: a spec of hypothetical devices
    ("cuda0=16G,cpu") or None for the registered ones; sim: simulated GPUs of this plan
    ("gpu0=8G", as `tierload --sim`), added to the registered devices when devices is None (a
    devices spec names them itself). The sims belong to the plan, not the process: plan() may
    be called again with the same sim names, and each plan's sessions get that plan's own sims.
    overrides: llama.cpp -ot style per-tensor placements, "PATTERN=DEVICE,..." (a regex
    searched in each name; the first match wins; the tensor stays on DEVICE for the run).
    type_rules: sd.cpp --tensor-type-rules style per-tensor types, "PATTERN=TYPE,..." (f32,
    f16, bf16, q8_0, q4_0), counted as loads and sessions given the same rules keep them.
    Infeasible plans raise Infeasible with the reason."""
    sims = _make_sims(sim) if sim else []
    try:
        devs = (L.PlanDevice * L.TL_PLAN_MAX_DEVICES)()
        n = ctypes.c_size_t()
        if devices:
            check(lib.tl_plan_parse_devices(_b(devices), devs, L.TL_PLAN_MAX_DEVICES,
                                            ctypes.byref(n)))
        else:
            dropped = ctypes.c_size_t()
            check(lib.tl_plan_devices_from_registry(devs, L.TL_PLAN_MAX_DEVICES, ctypes.byref(n),
                                                    ctypes.byref(dropped)))
            names = {devs[i].name.lower() for i in range(n.value)}
            for d in sims:
                name = lib.tl_device_name(d)
                if name.lower() in names:
                    raise InvalidArgument("plan: sim '%s': a registered device has that name "
                                          "already" % _s(name))
                if n.value >= L.TL_PLAN_MAX_DEVICES:
                    raise InvalidArgument("plan: too many devices with the sims")
                info = L.DeviceInfo()
                check(lib.tl_device_describe(d, ctypes.byref(info), ctypes.sizeof(info)))
                pd = devs[n.value]
                pd.name, pd.is_gpu, pd.total, pd.free = name, True, info.total, info.free
                n.value += 1
    except BaseException:
        _release_devices(sims)
        raise
    o = L.PlanOptions()
    lib.tl_plan_options_init(ctypes.byref(o))
    o.backend, o.max_vram, o.reserve, o.phases = _b(backend), _b(max_vram), _b(reserve), _b(phases)
    o.output_size = _b(output_size)
    o.headroom, o.steps, o.offload_to_cpu = headroom, steps, bool(offload_to_cpu)
    o.steps2 = steps2
    o.overrides = _b(overrides)
    o.type_rules = _b(type_rules)
    s = L.PlanSummary()
    h = ctypes.c_void_p()
    try:
        check(lib.tl_plan_create_for_model(model.handle, -1, devs, n.value, ctypes.byref(o),
                                           ctypes.byref(h)))
    except BaseException:
        _release_devices(sims)
        raise
    finally:
        lib.tl_plan_summary_clear(ctypes.byref(s))
    p = Plan(h, sims)
    check(lib.tl_plan_check(h))
    return p


_KINDS = ("cpu", "sim", "cuda", "other", "ggml")


class DeviceTensor:
    """A tensor (or the rows row_begin..row_end of one) in device memory. kind and host_pointer
    are the device's; shape is the part's. On a device whose handles are host addresses (the
    ggml:CPU device, an engine's host device) it exports DLPack (kDLCPU, no copy): torch computes
    on torch.from_dlpack(t) in place. On a CUDA device it exports DLPack (kDLCUDA) and
    __cuda_array_interface__. Elsewhere (sims: handles are not addresses) to_host() copies the
    bytes out. Valid while its acquired set is held: after release every use raises
    UseAfterRelease, and a DLPack export taken before must not be used either (the set's
    bytes may move; the export keeps the session alive, not the placement)."""
    __slots__ = ("name", "dtype", "shape", "tier", "device", "dptr", "offset", "nbytes",
                 "row_begin", "row_end", "kind", "host_pointer", "_dev", "_owner", "_guard")

    def __init__(self, info, part, owner=None, guard=None):
        self.name, self.dtype = info.name, info.dtype
        self.shape = tuple(info.shape)
        if self.shape and (part.row_begin, part.row_end) != (0, self.shape[0]) and \
                part.row_end > part.row_begin:
            self.shape = (part.row_end - part.row_begin,) + self.shape[1:]
        self.tier = _s(lib.tl_tier_name(part.tier))
        self.device = _s(lib.tl_device_name(part.device)) if part.device else None
        self.dptr, self.offset, self.nbytes = part.dptr, part.offset, part.nbytes
        self.row_begin, self.row_end = part.row_begin, part.row_end
        self._dev, self._owner, self._guard = part.device, owner, guard
        self.kind, self.host_pointer = None, False
        if part.device:
            di = L.DeviceInfo()
            if lib.tl_device_describe(part.device, ctypes.byref(di), ctypes.sizeof(di)) == 0:
                self.kind = _KINDS[di.kind] if 0 <= di.kind < len(_KINDS) else "other"
                self.host_pointer = bool(di.host_pointer)

    def __repr__(self):
        return "DeviceTensor(%r on %s, %s, 0x%x, %d bytes, rows %d..%d)" % (
            self.name, self.device, self.tier, self.dptr, self.nbytes, self.row_begin,
            self.row_end)

    def _check(self, op):
        if self._guard is not None and not self._guard.alive:
            raise _views.UseAfterRelease("tensor '%s' on %s: used after its acquired set was "
                                         "released (%s)" % (self.name, self.device, op))

    def __dlpack_device__(self):
        self._check("__dlpack_device__")
        if self.host_pointer:
            return (_dlpack.kDLCPU, 0)
        if self.kind == "cuda":
            return (_dlpack.kDLCUDA, _cuda_index(self.device))
        raise Unsupported("tensor '%s' on %s (%s): the device's handles are not addresses, "
                          "no DLPack (to_host() copies the bytes)"
                          % (self.name, self.device, self.kind))

    def __dlpack__(self, stream=None):
        """A DLPack capsule over the device memory (no copy). The session's copies are
        read-only: the consumer must not write into them."""
        dev_type, dev_id = self.__dlpack_device__()
        return _dlpack.export(self.dptr, self.dtype, self.shape, dev_type, dev_id, self,
                              "tensor '%s'" % self.name)

    @property
    def __cuda_array_interface__(self):
        """Version 3 of Numba's CUDA array interface, for CUDA devices only (read-only data)."""
        self._check("__cuda_array_interface__")
        if self.kind != "cuda":
            raise AttributeError("tensor '%s' on %s (%s): __cuda_array_interface__ is for CUDA "
                                 "devices" % (self.name, self.device, self.kind))
        np = _views.need_numpy()
        typestr = np.dtype(_views.numpy_dtype(self.dtype, "tensor '%s'" % self.name)).str
        return {"shape": tuple(self.shape), "typestr": typestr, "data": (self.dptr, True),
                "strides": None, "version": 3, "stream": None}

    def to_host(self):
        """A copy of the bytes in host memory: a torch tensor (numpy array without torch; a
        uint8 array for dtypes with no type there) of this part's shape."""
        self._check("to_host")
        if not self._dev:
            raise InvalidArgument("tensor '%s': not on a device" % self.name)
        buf = (ctypes.c_uint8 * max(self.nbytes, 1))()
        if self.nbytes:
            check(lib.tl_device_copy_from(self._dev, buf, self.dptr, self.nbytes))
        raw = _views.byte_array(ctypes.addressof(buf), self.nbytes, buf, True)
        try:
            if _views.torch is not None:
                return _views.torch_view(ctypes.addressof(buf), self.nbytes, self.dtype,
                                         self.shape, buf, True, "tensor '%s'" % self.name)
            return raw.view(_views.numpy_dtype(self.dtype, self.name)).reshape(self.shape)
        except Unsupported:
            return raw


def _cuda_index(name):
    digits = "".join(c for c in (name or "") if c.isdigit())
    return int(digits) if digits else 0


class Acquired:
    """What Session.acquire returns: a context manager whose value is {name: tensor}. Host
    tiers give zero-copy read-only torch tensors (ReadOnlyTensor: in-place writes raise
    ReadOnlyError; numpy without torch, read-only; a read-only uint8 numpy array of the bytes
    for dtypes with no type there, such as quantized ones), device tiers DeviceTensor (a list of
    them for row-split tensors). Released on exit (or release()). After release every op on
    its torch tensors and DeviceTensors raises UseAfterRelease (views and .data of them
    included); copies made before (clone(), results of ops) stay valid. Not guarded: numpy
    arrays (numpy has no hook), raw pointers (data_ptr()) and DLPack exports."""

    def __init__(self, session, h):
        self.session = session
        self._h = h
        self.tensors = {}
        model = session.model
        self.guard = _views.Guard("acquired set")
        for i in range(lib.tl_acquired_count(h)):
            st = lib.tl_acquired_tensor(h, i).contents
            info = model.tensors[st.index]
            if st.info.contents.nbytes != info.nbytes or \
                    _dtype_name(st.info.contents.dtype) != info.dtype:  # kept converted
                info = TensorInfo(st.index, st.info.contents)
            parts = [st.parts[k] for k in range(st.n_parts)]
            if len(parts) == 1 and parts[0].host and parts[0].tier != 3:
                p = parts[0]
                what = "tensor '%s'" % info.name
                try:
                    if _views.torch is None:
                        v = _views.numpy_view(p.host, p.nbytes, info.dtype, info.shape, self,
                                              False, what)
                    else:
                        v = _views.torch_view(p.host, p.nbytes, info.dtype, info.shape, self,
                                              False, what, guard=self.guard)
                except Unsupported:  # quantized or F8 without a type: the bytes
                    v = _views.byte_array(p.host, p.nbytes, self, False)
                self.tensors[info.name] = v
            else:
                d = [DeviceTensor(info, p, self, self.guard) for p in parts]
                self.tensors[info.name] = d[0] if len(d) == 1 else d

    def release(self):
        if self._h is not None:
            h, self._h = self._h, None
            self.guard.close()
            self.session._sets.discard(self)
            check(lib.tl_session_release(self.session.handle, h))

    def __enter__(self):
        return self.tensors

    def __exit__(self, *exc):
        self.release()
        return False

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


COMP_GROUP = 64  # TL_COMP_GROUP: the component of a step that names a group


class Group(collections.namedtuple("Group", "id name")):
    """A session's group of tensors (Session.group): a step for acquire, prefetch, schedules."""

    def step(self):
        return L.SessionStep(COMP_GROUP, self.id, self.id + 1, False)


def _layers(layers):
    if layers is None:
        return 0, ALL_LAYERS
    if isinstance(layers, int):
        return layers, layers + 1
    b, e = layers
    return b, ALL_LAYERS if e is None else e


class Session:
    """The residency manager carrying out a plan (tl_session). The model and plan are kept
    alive by the session."""

    def __init__(self, model, plan, host_budget=0, host_headroom=0, spill_dir=None,
                 spill_threshold=0, threads=0, staging_size=0, staging_count=0, policy="auto",
                 no_async=False, no_zero_copy=False, event_cap=0, no_events=False, progress=None,
                 dtype=None, type_rules=None):
        """progress(done, total), if given, is called on the acquiring thread while an
        acquire moves bytes (about every 50 ms, and once when done); returning False cancels
        that acquire (Cancelled). dtype ("F16", "BF16", "F32", "Q8_0", "Q4_0"): keep the
        tensors tl_convert_target picks converted on their devices (set_dtype: one tensor).
        type_rules ("PATTERN=TYPE,...", as plan()'s): per-tensor types, ahead of dtype."""
        o = L.SessionOptions()
        lib.tl_session_options_init(ctypes.byref(o))
        o.host_budget, o.host_headroom, o.spill_threshold = host_budget, host_headroom, spill_threshold
        o.spill_dir = _b(spill_dir)
        o.threads, o.staging_size, o.staging_count = threads, staging_size, staging_count
        o.policy = {"auto": 0, "lru": 1, "furthest": 2}[policy]
        o.no_async = bool(no_async)
        o.no_zero_copy = bool(no_zero_copy)
        o.event_cap, o.no_events = event_cap, bool(no_events)
        if dtype is not None:
            o.convert, o.dtype = True, _dtype_id(dtype, "Session")
        rules = _b(type_rules)  # parsed by the session at creation
        o.type_rules = rules
        self._progress = None
        if progress is not None:
            def cb(_user, done, total):
                try:
                    r = progress(done, total)
                    return r is None or bool(r)
                except Exception:  # an exception in the callback cancels the acquire
                    return False
            self._progress = o.progress = L.PROGRESS_FN(cb)  # kept alive with the session
        h = ctypes.c_void_p()
        with _BIND_LOCK:
            # the session binds plan devices by name in the registry: the plan's own sims are
            # registered for the bind only (the session keeps its references), then taken out
            registered = []
            try:
                for d in plan.sims:
                    st = lib.tl_device_register(d)
                    if st:
                        raise error_for(st, "session: sim '%s' of the plan: a device of that "
                                        "name is registered in this process (%s)"
                                        % (_s(lib.tl_device_name(d)), _s(lib.tl_last_error())))
                    registered.append(d)
                check(lib.tl_session_create(model.handle, plan.handle, ctypes.byref(o),
                                            ctypes.byref(h)))
            finally:
                for d in registered:
                    lib.tl_device_unregister(d)
        self.model, self.plan, self._h = model, plan, h
        self._sets = weakref.WeakSet()  # Acquired not yet released (each keeps self alive)
        self._lora_sets = weakref.WeakSet()  # at-load LoraSets: destroyed before the session
        self._finalizer = weakref.finalize(self, lib.tl_session_destroy, h)

    @property
    def handle(self):
        if not self._finalizer.alive:
            raise InvalidArgument("the session is closed")
        return self._h

    def close(self):
        """Destroy the session; refused (InvalidArgument) while an acquired set is not released."""
        if self._finalizer.alive and len(self._sets):
            raise InvalidArgument("the session has %d acquired sets outstanding: release them "
                                  "first" % len(self._sets))
        for ls in list(self._lora_sets):  # they detach from the session as they go
            ls.close()
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def _range(component, layers, with_other):
        """A component and layers (or a Group) as tl_session_acquire's arguments."""
        if isinstance(component, Group):
            return COMP_GROUP, component.id, component.id + 1, False
        b, e = _layers(layers)
        if with_other is None:
            with_other = layers is None
        return _component(component), b, e, bool(with_other)

    def acquire(self, component, layers=None, with_other=None, timeout_ms=0):
        """Make component's layers (None: all; an int; (begin, end)) resident where the plan
        says and reference them, or a Group's tensors (component a Group). with_other (default:
        when all layers are asked) adds the component's tensors outside any layer. timeout_ms:
        wait up to that long for other references to make room (0: fail at once)."""
        c, b, e, w = self._range(component, layers, with_other)
        h = ctypes.c_void_p()
        check(lib.tl_session_acquire_wait(self.handle, c, b, e, w, int(timeout_ms),
                                          ctypes.byref(h)))
        a = Acquired(self, h)
        self._sets.add(a)
        return a

    def _tensor_list(self, tensors):
        idx = [t if isinstance(t, int) else self.model.info(t).index for t in tensors]
        return (ctypes.c_size_t * max(len(idx), 1))(*idx), len(idx)

    def acquire_tensors(self, tensors, timeout_ms=0):
        """Acquire exactly these tensors (names or catalog indexes, any components): a graph
        segment's weights. Same set object as acquire."""
        arr, n = self._tensor_list(tensors)
        h = ctypes.c_void_p()
        check(lib.tl_session_acquire_tensors(self.handle, arr, n, int(timeout_ms),
                                             ctypes.byref(h)))
        a = Acquired(self, h)
        self._sets.add(a)
        return a

    def prefetch_tensors(self, tensors):
        arr, n = self._tensor_list(tensors)
        check(lib.tl_session_prefetch_tensors(self.handle, arr, n))

    def group(self, name, tensors):
        """Declare a group: a name and its tensors (names or indexes) in compute order. The
        Group is a step for acquire, prefetch, set_schedule and set_loop; the same tensors (a
        set acquired too) are the same group."""
        arr, n = self._tensor_list(tensors)
        st = L.SessionStep()
        check(lib.tl_session_group(self.handle, None if name is None else _b(name), arr, n,
                                   ctypes.byref(st)))
        return self._group(st.layer_begin)

    def _group(self, gid):
        nm = lib.tl_session_group_name(self.handle, gid)
        return Group(gid, None if nm is None else _s(nm))

    def set_budget(self, device, nbytes):
        """The session's budget on a plan device (weights and compute reserve), applied at once."""
        check(lib.tl_session_set_budget(self.handle, _b(device), int(nbytes)))

    def set_reserve(self, component, nbytes):
        """A component's compute reserve in bytes (e.g. the compute buffer just measured)."""
        check(lib.tl_session_set_reserve(self.handle, _component(component), int(nbytes)))

    def set_priority(self, priority):
        """Higher is kept longer when several sessions share a device (0 at creation)."""
        check(lib.tl_session_set_priority(self.handle, int(priority)))

    def cancel(self):
        """Cancel the acquires and prefetches in flight (from any thread): they raise
        Cancelled and leave nothing referenced."""
        check(lib.tl_session_cancel(self.handle))

    def prefetch(self, component, layers=None, with_other=None):
        check(lib.tl_session_prefetch(self.handle, *self._range(component, layers, with_other)))

    @staticmethod
    def _steps(steps):
        """(component, layers[, with_other]) tuples or Groups, as acquire takes them, as
        tl_session_steps."""
        arr = (L.SessionStep * max(len(steps), 1))()
        for i, st in enumerate(steps):
            if isinstance(st, Group):
                arr[i] = st.step()
                continue
            comp, layers = st[0], st[1]
            with_other = st[2] if len(st) > 2 else layers is None
            b, e = _layers(layers)
            arr[i] = L.SessionStep(_component(comp), b, e, bool(with_other))
        return arr, len(steps)

    def set_schedule(self, steps):
        """The order acquires will come in: (component, layers[, with_other]) per acquire."""
        arr, n = self._steps(steps)
        check(lib.tl_session_set_schedule(self.handle, arr, n))

    def set_loop(self, steps):
        """A pass the engine repeats (its acquires in order): the schedule, over and over."""
        arr, n = self._steps(steps)
        check(lib.tl_session_set_loop(self.handle, arr, n))

    def learn(self, on=True):
        """Learn the repeating pass (and its period) from the acquires as they come."""
        check(lib.tl_session_learn(self.handle, bool(on)))

    def next_step(self):
        """(component, (layer_begin, layer_end), with_other) the schedule expects next, a Group,
        or None."""
        st = L.SessionStep()
        if lib.tl_session_next_step(self.handle, ctypes.byref(st)) != 0:
            return None
        if st.component == COMP_GROUP:
            return self._group(st.layer_begin)
        return (_s(lib.tl_component_name(st.component)), (st.layer_begin, st.layer_end),
                bool(st.with_other))

    def evict(self, device, nbytes=None):
        """Evict unreferenced tensors of a plan device (None bytes: all); returns bytes freed."""
        freed = ctypes.c_uint64()
        n = (1 << 64) - 1 if nbytes is None else nbytes
        check(lib.tl_session_evict(self.handle, _b(device), n, ctypes.byref(freed)))
        return freed.value

    def mark_dirty(self, name):
        check(lib.tl_session_mark_dirty(self.handle, self.model.info(name).index))

    def refresh(self, name):
        """The model's bytes of a tensor changed (patched / unpatched): drop the session's
        copies so the next acquire loads the new bytes (how a LoRA is applied or removed)."""
        check(lib.tl_session_refresh(self.handle, self.model.info(name).index))

    def check(self):
        check(lib.tl_session_check(self.handle))

    def set_dtype(self, tensor, dtype):
        """Keep one tensor (name or index) as dtype from its next load (its file type: as in
        the file); it must not be acquired."""
        if isinstance(tensor, str):
            if tensor not in self.model._by_name:
                raise NotFound("set_dtype: no tensor '%s'" % tensor)
            i = self.model._by_name[tensor].index
        else:
            i = int(tensor)
        check(lib.tl_session_set_dtype(self.handle, i, _dtype_id(dtype, "set_dtype")))

    def stats(self):
        s = L.SessionStats()
        check(lib.tl_session_stats_get(self.handle, ctypes.byref(s), ctypes.sizeof(s)))
        out = {k: getattr(s, k) for k in ("bytes_moved", "loads", "drops", "spills", "evictions",
                                          "prefetch_hits", "prefetch_misses", "prefetch_skipped",
                                          "oom_recoveries", "host_used", "host_peak",
                                          "host_budget", "spill_used", "spill_peak",
                                          "pinned_used", "pinned_peak", "pinned_cap",
                                          "staging_bound", "acquire_waits",
                                          "acquire_timeouts", "acquire_cancels", "lora_loads",
                                          "lora_reloads", "lora_max_error",
                                          "lora_device_merges")}
        tiers = [_s(lib.tl_tier_name(t)) for t in range(L.TL_TIER_COUNT)]
        out["moved"] = {"%s->%s" % (tiers[a], tiers[b]): s.moved[a][b]
                        for a in range(L.TL_TIER_COUNT) for b in range(L.TL_TIER_COUNT)
                        if s.moved[a][b]}
        out["devices"] = [{"name": _s(d.name), "budget": d.budget, "used": d.used,
                           "peak": d.peak, "pinned": bool(d.pinned)}
                          for d in s.devices[:s.n_devices]]
        return out

    def events(self, since=0):
        """The event log's entries numbered since `since` on (a consistent copy), as dicts."""
        log = L.SessionLog()
        lib.tl_session_events_copy(self.handle, since, None, 0, 0, ctypes.byref(log),
                                   ctypes.sizeof(log))
        cap = max(0, log.next - max(since, log.first))
        ev = (L.SessionEvent * max(cap, 1))()
        n = lib.tl_session_events_copy(self.handle, since, ev, cap, ctypes.sizeof(L.SessionEvent),
                                       ctypes.byref(log), ctypes.sizeof(log))
        kinds = ("load", "drop", "spill", "prefetch", "acquire", "release")
        return [{"t": e.t, "kind": kinds[e.kind] if 0 <= e.kind < 6 else e.kind,
                 "component": _s(lib.tl_component_name(e.component)),
                 "layer": e.layer, "from": _s(lib.tl_tier_name(e.from_)),
                 "to": _s(lib.tl_tier_name(e.to)), "device": e.device, "bytes": e.bytes}
                for e in (ev[i] for i in range(n))]

    def event_log(self):
        """Where the log stands: first and next entry numbers, entries dropped, the bound."""
        log = L.SessionLog()
        lib.tl_session_events_copy(self.handle, 0, None, 0, 0, ctypes.byref(log), ctypes.sizeof(log))
        return {"first": log.first, "next": log.next, "dropped": log.dropped, "cap": log.cap}

    def clear_events(self):
        check(lib.tl_session_events_clear(self.handle))


class _SpillBuffer:
    """Owner of one tl_spill: destroyed (mapping and descriptor gone, file with them) when the
    last view of it is freed."""

    def __init__(self, nbytes, dir, chunk):
        o = L.SpillOptions()
        lib.tl_spill_options_init(ctypes.byref(o))
        o.dir, o.chunk_size = _b(dir), chunk
        h = ctypes.c_void_p()
        check(lib.tl_spill_create(nbytes, ctypes.byref(o), ctypes.byref(h)))
        self._h = h
        self.nbytes = nbytes
        self.fd = lib.tl_spill_fd(h)
        self._finalizer = weakref.finalize(self, lib.tl_spill_destroy, h)

    def write(self, off, addr, n):
        check(lib.tl_spill_write(self._h, off, addr, n))

    def map(self):
        p = ctypes.c_void_p()
        check(lib.tl_spill_map(self._h, ctypes.byref(p)))
        return p.value


def spill(tensor, dir=None, chunk=16 << 20):
    """A tensor of the same dtype and shape backed by an unnamed spill file (in dir, else
    TIERLOAD_SPILL_DIR, TMPDIR, /tmp), written chunk bytes at a time: memory grows by at most
    one chunk (a CPU contiguous tensor is written straight from its memory; others are copied
    chunk by chunk). The mapping is private: writes to the result stay in memory, the file
    never changes. The file is unlinked from the start; its descriptor and mapping go when the
    result is freed. numpy arrays give numpy arrays."""
    np = _views.np
    torch = _views.torch
    if np is not None and isinstance(tensor, np.ndarray):
        a = tensor
        nbytes = a.nbytes
        if nbytes == 0:
            return a.copy()
        buf = _SpillBuffer(nbytes, dir, chunk)
        if a.flags.c_contiguous:
            buf.write(0, a.ctypes.data, nbytes)
        else:
            flat_rows = max(1, chunk // max(1, a[0].nbytes if a.ndim else nbytes))
            off = 0
            for i in range(0, a.shape[0], flat_rows):
                c = np.ascontiguousarray(a[i:i + flat_rows])
                buf.write(off, c.ctypes.data, c.nbytes)
                off += c.nbytes
        raw = _views.byte_array(buf.map(), nbytes, buf, True)
        return raw.view(a.dtype).reshape(a.shape)
    if torch is None or not isinstance(tensor, torch.Tensor):
        raise InvalidArgument("spill: a torch tensor or numpy array is needed, not %s"
                              % type(tensor).__name__)
    t = tensor.detach()
    name = _views.torch_dtype_name(t.dtype)
    if name is None:
        raise Unsupported("spill: dtype %s is not one tierload maps" % t.dtype)
    nbytes = t.numel() * t.element_size()
    if nbytes == 0:
        return t.clone().cpu()
    buf = _SpillBuffer(nbytes, dir, chunk)
    if t.device.type == "cpu" and t.is_contiguous():
        buf.write(0, t.data_ptr(), nbytes)
    elif t.is_contiguous():
        flat = t.reshape(-1)
        per = max(1, chunk // t.element_size())
        off = 0
        for i in range(0, flat.numel(), per):
            c = flat[i:i + per].to("cpu")
            buf.write(off, c.data_ptr(), c.numel() * c.element_size())
            off += c.numel() * c.element_size()
    else:
        rows = max(1, chunk // max(1, t[0].numel() * t.element_size())) if t.dim() else 1
        off = 0
        for i in range(0, t.shape[0], rows):
            c = t[i:i + rows].to("cpu").contiguous()
            buf.write(off, c.data_ptr(), c.numel() * c.element_size())
            off += c.numel() * c.element_size()
    return _views.torch_view(buf.map(), nbytes, name, tuple(t.shape), buf, True,
                             "spill of a %s tensor" % t.dtype)


def _report(r):
    return {"modules": r.n_modules, "matched": r.n_matched, "unmatched": r.n_unmatched,
            "unmatched_names": [_s(r.unmatched[i].value)
                                for i in range(min(r.n_unmatched, L.TL_LORA_REPORT_NAMES))]}


class Lora:
    """A LoRA file (safetensors or GGUF; lora_down/up, lora_A/B, LoHa, LoKr modules), mapped
    read-only. Immutable; one Lora may be added to several sets."""

    def __init__(self, path):
        h = ctypes.c_void_p()
        check(lib.tl_lora_open(_b(os.fspath(path)), ctypes.byref(h)))
        self._h = h
        self.path = os.fspath(path)
        self._finalizer = weakref.finalize(self, lib.tl_lora_close, h)

    def __len__(self):
        """Modules (weight deltas) in the file."""
        return lib.tl_lora_module_count(self._h)

    def match(self, model):
        """Which modules match tensors of model (nothing changes): a report dict (modules,
        matched, unmatched, unmatched_names)."""
        r = L.LoraReport()
        check(lib.tl_lora_match(model.handle, self._h, ctypes.byref(r), ctypes.sizeof(r)))
        return _report(r)

    def __repr__(self):
        return "Lora(%r, %d modules)" % (self.path, len(self))


def _dtype_id(dtype, what):
    d = lib.tl_dtype_from_name(_b(str(dtype)))
    if d < 0:
        raise InvalidArgument("%s: unknown dtype '%s'" % (what, dtype))
    return d


class LoraSet:
    """The LoRAs merged into a model opened writable=True, and optionally into a session
    running it: add, rescale and remove in any order. Merges are in place (copy-on-write: the
    file never changes) and computed as W + scale * (alpha / rank) * up @ down, in F32, rounded
    once. A removal or new scale restores the affected tensors from the file and re-applies
    the LoRAs that remain, in order. With a session, its copies of the affected tensors are
    dropped and the next acquire loads the merged bytes; an affected tensor that is acquired
    makes the call raise InvalidArgument before anything changes. Zero-copy views of the
    model (Model.torch, fill_module) see the merged bytes. Calls on one set from one thread at
    a time."""

    def __init__(self, model, session=None, at_load=False, quant_as_f16=False, on_device=False):
        """at_load=True: applied to the session's weights as each unit loads instead (nothing
        merged ahead; the model may be read-only; F32/F16/BF16 bytes as a merge gives them,
        Q8_0/Q4_0 requantized, or kept at F16 with quant_as_f16); the session is required.
        on_device=True: units on a ggml device are merged by that device (F32/F16/BF16 weights,
        plain LoRAs; F16/BF16 within 1 ulp of a merge's bytes, F32 within about 1e-7 of the
        largest value; stats()["lora_device_merges"] counts them)."""
        if session is not None and session.model is not model:
            raise InvalidArgument("LoraSet: the session runs another model")
        h = ctypes.c_void_p()
        if at_load:
            if session is None:
                raise InvalidArgument("LoraSet: at_load needs the session")
            flags = (1 if quant_as_f16 else 0) | (2 if on_device else 0)
            check(lib.tl_lora_set_create_at_load(session.handle, flags, ctypes.byref(h)))
        else:
            check(lib.tl_lora_set_create(model.handle, session.handle if session else None,
                                         ctypes.byref(h)))
        if at_load:
            session._lora_sets.add(self)
        self.model, self.session, self._h = model, session, h
        self._loras = []  # [Lora, scale]: the set borrows them, so they are kept here
        self._finalizer = weakref.finalize(self, lib.tl_lora_set_destroy, h)

    def _find(self, lora):
        for e in self._loras:
            if e[0] is lora or (not isinstance(lora, Lora) and e[0].path == os.fspath(lora)):
                return e
        raise NotFound("LoraSet: %r is not in the set" % (lora,))

    def add(self, lora, scale=1.0):
        """Merge a Lora (or a path, opened here) at scale; returns (the Lora, its report)."""
        if not isinstance(lora, Lora):
            lora = Lora(lora)
        r = L.LoraReport()
        check(lib.tl_lora_set_add(self._h, lora._h, float(scale), ctypes.byref(r),
                              ctypes.sizeof(r)))
        self._loras.append([lora, float(scale)])
        return lora, _report(r)

    def rescale(self, lora, scale):
        e = self._find(lora)
        check(lib.tl_lora_set_scale(self._h, e[0]._h, float(scale)))
        e[1] = float(scale)

    def remove(self, lora):
        e = self._find(lora)
        check(lib.tl_lora_set_remove(self._h, e[0]._h))
        self._loras.remove(e)

    @property
    def loras(self):
        """[(Lora, scale)] in the order applied."""
        return [(l, sc) for l, sc in self._loras]

    def close(self):
        """Free the set; the model keeps its merged bytes."""
        self._finalizer()


def free_memory(nbytes, device, plan=None):
    """Make at least nbytes free on device (a name: "cuda0", "ggml:CPU", "cpu"; with plan, one
    of that plan's sims) by evicting what tierload's sessions hold there and nobody references,
    as ComfyUI's model_management.free_memory asks of its models; returns the bytes evicted.
    DeviceOOM (saying how much room there is) when that is not enough. Needs a libtierload
    that exports tl_device_make_room; with an older one it raises Unsupported."""
    fn = L.optional("tl_device_make_room", ctypes.c_int,
                    [ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64)])
    if fn is None:
        raise Unsupported("free_memory: this libtierload (%s) has no tl_device_make_room; "
                          "evict per session with Session.evict(device, nbytes)" % version())
    d = ctypes.c_void_p()
    if plan is not None:
        for sd in plan.sims:
            if _s(lib.tl_device_name(sd)).lower() == str(device).lower():
                lib.tl_device_retain(sd)
                d = sd
                break
        else:
            raise NotFound("free_memory: the plan has no sim named '%s'" % device)
    else:
        check(lib.tl_device_find(_b(device), ctypes.byref(d)))
    try:
        freed = ctypes.c_uint64()
        check(fn(d, int(nbytes), ctypes.byref(freed)))
        return freed.value
    finally:
        lib.tl_device_release(d)


def fill_module(module, source, name_map=None, prefix="", strict=True, writable=None):
    """Fill a torch nn.Module's parameters and buffers with zero-copy tensors of source, as
    module.load_state_dict would with copies, so a pipeline keeps its own modules.

    source: a Model (its tensors: read-only ReadOnlyTensor views of a read-only open, writable
    copy-on-write views of a writable=True one; writable= overrides), a LoadResult, or a mapping
    name -> tensor (an acquired set). Each of the module's state_dict names ("blocks.0.weight")
    is looked up as prefix + name_map(name): name_map None (the name itself), a dict (names it
    lacks are used as they are) or a callable (returning None skips the tensor). Shapes and
    dtypes must match (InvalidArgument naming the tensor); names the source lacks (persistent
    buffers included, as load_state_dict counts them) are NotFound
    when strict, else left as they are. Parameters become nn.Parameter(requires_grad=False)
    over the source's memory; buffers the tensors themselves. A module may be filled again
    (the next block's weights, after its set was released). Returns {"filled": [...],
    "missing": [...]} (module names)."""
    torch = _views.need_torch()
    if isinstance(source, Model):
        def get(n):
            return source.torch(n, writable) if n in source else None
    elif isinstance(source, LoadResult):
        def get(n):
            return source.torch(n) if n in source._names else None
    else:
        def get(n):
            return source.get(n) if n in source else None
    if name_map is None:
        def mapped(n):
            return n
    elif callable(name_map):
        mapped = name_map
    else:
        def mapped(n):
            return name_map.get(n, n)
    params = {n for n, _ in module.named_parameters()}
    entries = [(n, v, n in params) for n, v in module.state_dict(keep_vars=True).items()]
    plan_, missing = [], []
    for name, cur, is_param in entries:
        src_name = mapped(name)
        if src_name is None:
            continue
        src_name = prefix + src_name
        t = get(src_name)
        if t is None:
            missing.append(name)
            continue
        if isinstance(t, DeviceTensor) or isinstance(t, list):
            raise InvalidArgument("fill_module: %s ('%s') is on a device: use "
                                  "torch.from_dlpack" % (name, src_name))
        if not isinstance(t, torch.Tensor):
            raise Unsupported("fill_module: %s ('%s'): no torch type for its dtype"
                              % (name, src_name))
        with torch._C.DisableTorchFunction():  # cur may be a released set's: refilled here
            shape, dtype = tuple(cur.shape), cur.dtype
            t_shape, t_dtype = tuple(t.shape), t.dtype
        if t_shape != shape:
            raise InvalidArgument("fill_module: %s ('%s'): shape %s in the model, %s in the "
                                  "module" % (name, src_name, list(t_shape), list(shape)))
        if t_dtype != dtype:
            raise InvalidArgument("fill_module: %s ('%s'): dtype %s in the model, %s in the "
                                  "module (module.to(dtype) first, or load with dtype=)"
                                  % (name, src_name, t_dtype, dtype))
        plan_.append((name, t, is_param))
    if strict and missing:
        raise NotFound("fill_module: %d tensors of the module are not in the source: %s"
                       % (len(missing), ", ".join(missing[:8]) + (" ..." if len(missing) > 8
                                                                   else "")))
    for name, t, is_param in plan_:  # nothing is replaced until every check passed
        mod = module
        parts = name.split(".")
        for a in parts[:-1]:
            mod = getattr(mod, a)
        leaf = parts[-1]
        if is_param:
            mod._parameters[leaf] = torch.nn.Parameter(t, requires_grad=False)
        else:
            mod._buffers[leaf] = t
    return {"filled": [p[0] for p in plan_], "missing": missing}


def ggml_discover(dir=None):
    """Register ggml's backend devices ("ggml:CPU", "ggml:CUDA0", ...) from ggml's libraries in
    dir (else TIERLOAD_GGML_DIR, the ggml build tierload was configured with, or the loader's
    path); returns how many were added. NotFound, with the reason, when ggml cannot be loaded."""
    n = ctypes.c_size_t()
    check(lib.tl_device_ggml_discover(_b(dir), ctypes.byref(n)))
    return n.value


def keep_warm(nbytes):
    """Keep up to nbytes of host memory freed by loads (and sessions' host copies) faulted in, for
    the next load of this process to draw from: a server switching checkpoints then skips the
    page faults and zeroing of a fresh load. 0 keeps nothing and empties the pool now."""
    nbytes = int(nbytes)
    if nbytes < 0:
        raise InvalidArgument("keep_warm: a size in bytes, not %d" % nbytes)
    lib.tl_warm_pool_set(nbytes)


def warm_pool():
    """The warm pool's counters: bound, held, regions, held_peak, taken, takes, released."""
    w = L.WarmStats()
    lib.tl_warm_pool_stats(ctypes.byref(w), ctypes.sizeof(w))
    return {k: getattr(w, k) for k, _ in L.WarmStats._fields_}


def memstats(models=None):
    """Memory facts now: rss, rss_anon, rss_file, rss_shmem, uss, peak_rss, mem_total,
    mem_available, cgroup (max/current, None without a limit) and page_cache: bytes of the open
    models' files in the page cache (the models given, else every open one)."""
    m = L.MemStats()
    check(lib.tl_memstats_read(ctypes.byref(m), ctypes.sizeof(m)))
    out = {k: getattr(m, k) for k in ("rss", "rss_anon", "rss_file", "rss_shmem", "uss",
                                      "peak_rss", "mem_total", "mem_available")}
    out["cgroup_max"] = m.cgroup_max if m.has_cgroup and m.cgroup_max != (1 << 64) - 1 else None
    out["cgroup_current"] = m.cgroup_current if m.has_cgroup else None
    ms = list(_open_models) if models is None else (
        [models] if isinstance(models, Model) else list(models))
    pc = 0
    for mod in ms:
        if mod._finalizer.alive:
            pc += mod.page_cache()
    out["page_cache"] = pc
    return out
