"""_views.py — zero-copy numpy arrays and torch tensors over memory the library owns.

A view holds a reference to its owner (the model, load result, session or spill buffer) through
the ctypes array that is the numpy array's base, so the memory lives as long as any view of it.

Read-only memory (a model opened read-only, a session's copies) is never handed out writable:
numpy arrays sit on a read-only buffer (writeable=False, and it cannot be switched back on);
torch has no read-only tensors, so torch views are ReadOnlyTensor, a torch.Tensor subclass whose
__torch_function__ refuses every in-place op, out= and item assignment on it (or on a view of it)
with ReadOnlyError before torch touches the memory. A guard (Guard) can also be attached: once it
is closed (an acquired set released), every op on the tensor raises UseAfterRelease.
"""
import ctypes
import warnings

from . import _errors

try:
    import numpy as np
except ImportError:  # numpy is optional
    np = None

try:
    import torch
except ImportError:  # torch is optional
    torch = None

# dtype name -> numpy dtype name (only the types numpy represents exactly)
_NUMPY = {
    "F32": "float32", "F16": "float16", "F64": "float64", "I8": "int8", "I16": "int16",
    "I32": "int32", "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32",
    "U64": "uint64", "BOOL": "bool", "C64": "complex64",
}

# dtype name -> torch attribute names, first one the installed torch has wins
_TORCH = {
    "F32": ("float32",), "F16": ("float16",), "BF16": ("bfloat16",), "F64": ("float64",),
    "I8": ("int8",), "I16": ("int16",), "I32": ("int32",), "I64": ("int64",), "U8": ("uint8",),
    "U16": ("uint16",), "U32": ("uint32",), "U64": ("uint64",), "BOOL": ("bool",),
    "C64": ("complex64",), "F8_E4M3": ("float8_e4m3fn",), "F8_E5M2": ("float8_e5m2",),
    "F8_E8M0": ("float8_e8m0fnu",),
}


def need_numpy():
    if np is None:
        raise _errors.Unsupported("numpy is not installed (apt-get install python3-numpy)")
    return np


def need_torch():
    if torch is None:
        raise _errors.Unsupported("torch is not installed (apt-get install python3-torch)")
    return torch


def numpy_dtype(dtype_name, what):
    need_numpy()
    n = _NUMPY.get(dtype_name)
    if n is None:
        raise _errors.Unsupported(
            "%s: dtype %s has no numpy type (use .torch() where torch has it, or .raw() for the "
            "bytes)" % (what, dtype_name))
    return np.dtype(n)


def torch_dtype(dtype_name, what):
    need_torch()
    for attr in _TORCH.get(dtype_name, ()):
        t = getattr(torch, attr, None)
        if t is not None:
            return t
    raise _errors.Unsupported(
        "%s: dtype %s has no type in the installed torch %s (use .raw() for the bytes)"
        % (what, dtype_name, torch.__version__))


def torch_dtype_name(t):
    """Our dtype name of a torch dtype (None when not one of ours)."""
    for name, attrs in _TORCH.items():
        for a in attrs:
            if getattr(torch, a, None) is t:
                return name
    return None


def byte_array(addr, nbytes, owner, writable):
    """A 1-D uint8 numpy array over [addr, addr+nbytes) that keeps owner alive. Not writable:
    the array's buffer is a read-only memoryview, so writeable cannot be set back to True."""
    need_numpy()
    if nbytes == 0:
        a = np.zeros(0, dtype=np.uint8)
        a.flags.writeable = bool(writable)
        return a
    buf = (ctypes.c_uint8 * nbytes).from_address(addr)
    buf._tl_owner = owner  # the ctypes array is the numpy base: owner lives as long as views
    if not writable:
        buf = memoryview(buf).toreadonly()  # keeps the ctypes array (and owner) alive
    return np.frombuffer(buf, dtype=np.uint8)


def numpy_view(addr, nbytes, dtype_name, shape, owner, writable, what):
    dt = numpy_dtype(dtype_name, what)
    return byte_array(addr, nbytes, owner, writable).view(dt).reshape(shape)


def torch_view(addr, nbytes, dtype_name, shape, owner, writable, what, guard=None):
    """A torch tensor over [addr, addr+nbytes): a plain tensor when writable, else a
    ReadOnlyTensor (with guard, when given, checked on every op)."""
    dt = torch_dtype(dtype_name, what)
    raw = byte_array(addr, nbytes, owner, writable)
    with warnings.catch_warnings():
        # a read-only buffer: torch warns it cannot mark the tensor read-only; ReadOnlyTensor does
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(raw)
    if nbytes == 0:
        t = torch.empty(tuple(shape), dtype=dt)
    else:
        t = t.view(dt).reshape(tuple(shape))
    if writable and guard is None:
        return t
    return _readonly(t, what, addr, addr + nbytes, guard, writable)


class ReadOnlyError(_errors.InvalidArgument):
    """A write into memory tierload hands out read-only (a model opened read-only, a session's
    copies): refused before any byte is touched."""


class UseAfterRelease(_errors.InvalidArgument):
    """A tensor of an acquired set used after the set was released."""


class Guard:
    """Validity of the tensors handed out by one acquired set: closed on release."""
    __slots__ = ("alive", "what", "__weakref__")

    def __init__(self, what):
        self.alive = True
        self.what = what

    def close(self):
        self.alive = False


# in-place methods whose name ends in "_" but write no tensor memory
_NOT_WRITES = {"requires_grad_", "retain_grad", "share_memory_", "_fix_weakref"}
_INPLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__",
                    "__ifloordiv__", "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__",
                    "__ilshift__", "__irshift__", "__imatmul__"}


def _func_name(func):
    return getattr(func, "__name__", None) or str(func)


def _writes_first_arg(name):
    if name in _INPLACE_DUNDERS:
        return True
    return name.endswith("_") and not name.startswith("__") and name not in _NOT_WRITES


def _ro_tensors(x):
    """The ReadOnlyTensor instances in x (a tensor, or a list / tuple of them)."""
    if torch is not None and isinstance(x, ReadOnlyTensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for e in x for t in _ro_tensors(e)]
    return []


if torch is not None:
    class ReadOnlyTensor(torch.Tensor):
        """A zero-copy tensor over memory tierload owns and hands out read-only. Every op goes
        through __torch_function__: in-place ops, out=, item assignment and writable .numpy()
        on it raise ReadOnlyError; views of it (slices, .t(), .view, .detach(), .data, ...)
        are ReadOnlyTensor too, other results plain tensors. With a guard, every op raises
        UseAfterRelease once the guard is closed. Writes through a raw pointer (data_ptr, a
        DLPack export) are not seen."""

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = _func_name(func)
            ins = _ro_tensors(args) + _ro_tensors(list(kwargs.values()))
            for t in ins:
                g = t.__dict__.get("_tl_guard")
                if g is not None and not g.alive:
                    raise UseAfterRelease("%s: used after its %s was %s (%s)" % (
                        t.__dict__.get("_tl_what", "tensor"), g.what,
                        "closed" if g.what == "model" else "released", name))
            if args and (_writes_first_arg(name) or kwargs.get("inplace") is True):
                for t in _ro_tensors(args[0]):
                    if not t.__dict__.get("_tl_writable"):
                        raise ReadOnlyError("%s is read-only (%s): the model was opened "
                                            "read-only or the tensor is a session's copy; open "
                                            "with writable=True and patch Model.torch(name) "
                                            "(copy-on-write), or clone() it"
                                            % (t.__dict__.get("_tl_what", "tensor"), name))
            out = kwargs.get("out")
            if out is not None:
                for t in _ro_tensors(out):
                    if not t.__dict__.get("_tl_writable"):
                        raise ReadOnlyError("%s is read-only (out= of %s)"
                                            % (t.__dict__.get("_tl_what", "tensor"), name))
            with torch._C.DisableTorchFunction():
                ret = func(*args, **kwargs)
            if name in ("numpy", "__array__") and ins and np is not None and \
                    isinstance(ret, np.ndarray):  # np.asarray(t) too
                if not ins[0].__dict__.get("_tl_writable"):
                    ret.flags.writeable = False
                return ret
            return _rewrap(ret, ins)

        def __deepcopy__(self, memo):
            """A deep copy owns its memory: a plain (writable) tensor, a Parameter for one."""
            if id(self) in memo:
                return memo[id(self)]
            c = self.clone()
            if self.__dict__.get("_is_param"):
                c = torch.nn.Parameter(c, requires_grad=self.requires_grad)
            memo[id(self)] = c
            return c

        def __reduce_ex__(self, proto):
            # pickled (torch.save) as a plain tensor of the same values
            with torch._C.DisableTorchFunction():
                plain = torch.Tensor.as_subclass(self, torch.Tensor)
            return plain.__reduce_ex__(proto)

    def _rewrap(ret, ins):
        """Results that alias the memory of a ReadOnlyTensor argument stay ReadOnlyTensor."""
        if isinstance(ret, (list, tuple)):
            if not any(isinstance(r, torch.Tensor) for r in ret):
                return ret
            out = [_rewrap(r, ins) for r in ret]
            return type(ret)(out) if type(ret) in (list, tuple) else type(ret)(*out)
        if not isinstance(ret, torch.Tensor) or isinstance(ret, ReadOnlyTensor):
            return ret
        try:
            p = ret.data_ptr()
        except RuntimeError:
            return ret
        for t in ins:
            d = t.__dict__
            if d.get("_tl_lo", 0) <= p < d.get("_tl_hi", 0) or (
                    p == d.get("_tl_lo", 0) and ret.numel() == 0):
                return _readonly(ret, d.get("_tl_what"), d["_tl_lo"], d["_tl_hi"],
                                 d.get("_tl_guard"), d.get("_tl_writable", False))
        return ret
else:
    ReadOnlyTensor = None


def _readonly(t, what, lo, hi, guard, writable):
    r = t.as_subclass(ReadOnlyTensor)
    r.__dict__.update(_tl_what=what, _tl_lo=lo, _tl_hi=hi, _tl_guard=guard,
                      _tl_writable=bool(writable))
    return r
