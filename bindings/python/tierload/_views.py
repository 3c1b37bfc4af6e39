"""_views.py — zero-copy numpy arrays and torch tensors over memory the library owns.

A view holds a reference to its owner (the model, load result, session or spill buffer) through
the ctypes array that is the numpy array's base, so the memory lives as long as any view of it.
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
    """A 1-D uint8 numpy array over [addr, addr+nbytes) that keeps owner alive."""
    need_numpy()
    if nbytes == 0:
        return np.zeros(0, dtype=np.uint8)
    buf = (ctypes.c_uint8 * nbytes).from_address(addr)
    buf._tl_owner = owner  # the ctypes array is the numpy base: owner lives as long as views
    arr = np.frombuffer(buf, dtype=np.uint8)
    if not writable:
        arr.flags.writeable = False
    return arr


def numpy_view(addr, nbytes, dtype_name, shape, owner, writable, what):
    dt = numpy_dtype(dtype_name, what)
    return byte_array(addr, nbytes, owner, writable).view(dt).reshape(shape)


def torch_view(addr, nbytes, dtype_name, shape, owner, writable, what):
    dt = torch_dtype(dtype_name, what)
    raw = byte_array(addr, nbytes, owner, writable)
    with warnings.catch_warnings():
        # a read-only mapping: torch cannot mark a tensor read-only, writes fault (documented)
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(raw)
    if nbytes == 0:
        return torch.empty(tuple(shape), dtype=dt)
    return t.view(dt).reshape(tuple(shape))
