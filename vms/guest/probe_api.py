# SPDX-License-Identifier: GPL-2.0-only
"""Guest-side UFFDIO_API probe, independent of the uffdwp binding (stdlib only).

Prints JSON: kernel uname, the features and ioctls a features=0 handshake negotiates, and the
userfaultfd sysctl. The matrix report uses it when the suites wrote no results.json, so a kernel's
negotiated features are known even when the suites themselves could not run.
"""

import ctypes
import json
import os
import platform

SYS_userfaultfd = 323  # x86_64
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F  # _IOWR(0xAA, 0x3F, struct uffdio_api): 24 bytes


class UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


def probe() -> dict:
    u = os.uname()
    out = {"kernel": {"release": u.release, "version": u.version, "machine": u.machine},
           "python": platform.python_version()}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(SYS_userfaultfd, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        out["error"] = "userfaultfd: " + os.strerror(ctypes.get_errno())
    else:
        api = UffdioApi(UFFD_API, 0, 0)
        libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        if libc.ioctl(fd, UFFDIO_API, ctypes.byref(api)) != 0:
            out["error"] = "UFFDIO_API: " + os.strerror(ctypes.get_errno())
        else:
            out["api"] = {"features": api.features, "ioctls": api.ioctls}
        os.close(fd)
    try:
        with open("/proc/sys/vm/unprivileged_userfaultfd") as f:
            out["unprivileged_userfaultfd"] = int(f.read())
    except OSError:
        pass
    return out


if __name__ == "__main__":
    print(json.dumps(probe(), indent=1))
