"""_dlpack.py — DLPack capsules (the unversioned DLManagedTensor of DLPack 0.x) made with ctypes.

export() wraps memory the library owns in a PyCapsule named "dltensor" whose DLManagedTensor
keeps a Python owner alive until the consumer calls its deleter (or, when no consumer took it,
until the capsule is freed). Nothing is copied.
"""
import ctypes

from . import _errors

kDLCPU, kDLCUDA = 1, 2
kDLInt, kDLUInt, kDLFloat, kDLBfloat, kDLComplex = 0, 1, 2, 4, 5

# dtype name -> (code, bits)
DTYPES = {"F32": (kDLFloat, 32), "F16": (kDLFloat, 16), "F64": (kDLFloat, 64),
          "BF16": (kDLBfloat, 16), "I8": (kDLInt, 8), "I16": (kDLInt, 16), "I32": (kDLInt, 32),
          "I64": (kDLInt, 64), "U8": (kDLUInt, 8), "U16": (kDLUInt, 16), "U32": (kDLUInt, 32),
          "U64": (kDLUInt, 64), "C64": (kDLComplex, 64)}


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", DELETER)]


_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

# address of a live DLManagedTensor -> what keeps it and its owner alive
_live = {}


def _delete(addr):
    # the consumer is done (or the capsule was never consumed): drop the owner's reference
    _live.pop(addr, None)


_DELETER = DELETER(_delete)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(cap):
    # a capsule still named "dltensor" was never consumed: its tensor is ours to delete
    if _api.PyCapsule_IsValid(cap, b"dltensor"):
        _delete(_api.PyCapsule_GetPointer(cap, b"dltensor"))


def live_count():
    """DLPack exports whose consumer has not let go yet (for tests and leak checks)."""
    return len(_live)


def export(addr, dtype_name, shape, device_type, device_id, owner, what):
    """A "dltensor" PyCapsule over a C-contiguous tensor at addr; owner lives until the
    consumer deletes it."""
    dt = DTYPES.get(dtype_name)
    if dt is None:
        raise _errors.Unsupported("%s: dtype %s has no DLPack type tierload exports" %
                                  (what, dtype_name))
    m = DLManagedTensor()
    nd = len(shape)
    shp = (ctypes.c_int64 * max(nd, 1))(*shape)
    m.dl_tensor.data = addr
    m.dl_tensor.device = DLDevice(device_type, device_id)
    m.dl_tensor.ndim = nd
    m.dl_tensor.dtype = DLDataType(dt[0], dt[1], 1)
    m.dl_tensor.shape = ctypes.cast(shp, ctypes.POINTER(ctypes.c_int64))
    m.dl_tensor.strides = None  # compact row-major
    m.dl_tensor.byte_offset = 0
    m.manager_ctx = None
    m.deleter = _DELETER
    a = ctypes.addressof(m)
    _live[a] = (m, shp, owner)
    try:
        return _api.PyCapsule_New(a, b"dltensor", ctypes.cast(_capsule_destructor,
                                                             ctypes.c_void_p))
    except BaseException:
        _live.pop(a, None)
        raise
