"""_errors.py — tierload.Error and one subclass per tl_status, raised with the library's message."""
from ._lib import lib


class Error(Exception):
    """A libtierload call failed: .status is the status name ("TL_ERR_FORMAT"), .message the
    library's message (it names the file and tensor involved)."""

    status = "TL_ERR"
    code = -1

    def __init__(self, message, status=None):
        if status is not None:
            self.status = status
        self.message = message
        super().__init__("%s: %s" % (self.status, message))


def _sub(name, code, status, doc):
    return type(name, (Error,), {"status": status, "code": code, "__doc__": doc})


InvalidArgument = _sub("InvalidArgument", 1, "TL_ERR_INVALID_ARG", "A caller's argument is wrong.")
IOError = _sub("IOError", 2, "TL_ERR_IO", "A system call on a file failed.")
FormatError = _sub("FormatError", 3, "TL_ERR_FORMAT", "A model file is malformed or hostile.")
NoMemory = _sub("NoMemory", 4, "TL_ERR_NOMEM", "Host memory could not be had.")
NotFound = _sub("NotFound", 5, "TL_ERR_NOT_FOUND", "A file, tensor, key or device does not exist.")
Unsupported = _sub("Unsupported", 6, "TL_ERR_UNSUPPORTED",
                   "Valid, but not something tierload (or the installed numpy/torch) handles.")
DeviceOOM = _sub("DeviceOOM", 7, "TL_ERR_DEVICE_OOM", "A device is out of memory.")
DeviceError = _sub("DeviceError", 8, "TL_ERR_DEVICE", "A device failed.")
Cancelled = _sub("Cancelled", 9, "TL_ERR_CANCELLED", "A progress callback asked to stop.")
Infeasible = _sub("Infeasible", 10, "TL_ERR_INFEASIBLE", "A plan cannot fit the budgets.")
Changed = _sub("Changed", 11, "TL_ERR_CHANGED", "A file changed under its mapping.")
IntegrityError = _sub("IntegrityError", 12, "TL_ERR_INTEGRITY",
                      "Bytes differ from what they should be.")

_BY_CODE = {c.code: c for c in (InvalidArgument, IOError, FormatError, NoMemory, NotFound,
                                Unsupported, DeviceOOM, DeviceError, Cancelled, Infeasible,
                                Changed, IntegrityError)}


def error_for(status, message=None):
    """The exception for a failed call's status, with tl_last_error() as its message."""
    if message is None:
        raw = lib.tl_last_error()
        message = raw.decode("utf-8", "replace") if raw else ""
    cls = _BY_CODE.get(status)
    if cls is None:
        name = lib.tl_status_name(status)
        return Error(message, name.decode() if name else "TL_ERR(%d)" % status)
    return cls(message)


def check(status):
    """Raise the matching Error unless status is TL_OK."""
    if status != 0:
        raise error_for(status)
