# SPDX-License-Identifier: GPL-2.0-only
"""The compiled module, with a message that says how to build it when it is missing."""

from __future__ import annotations

try:
    from ._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "uffdwp's native module is not built: install the package (`pip install -e .` in the "
        "source tree, which compiles it with cffi; needs gcc and the Python headers)"
    ) from exc

__all__ = ["ffi", "lib"]


def address_of(obj: object) -> int:
    """The address of a writable buffer, or the int itself."""
    if isinstance(obj, int):
        return obj
    return int(ffi.cast("uintptr_t", ffi.from_buffer(obj)))
