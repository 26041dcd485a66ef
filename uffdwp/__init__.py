# SPDX-License-Identifier: GPL-2.0-only
"""uffdwp: a Python binding for Linux userfaultfd write-protect, and the suite that checks it.

    from uffdwp import Userfaultfd, Feature, RegisterMode, memory

    region = memory.allocate("anon", pages=4)
    with Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP) as uffd:
        uffd.register(region.address, region.length, RegisterMode.WP)
        uffd.writeprotect(region.address, region.length)
"""

from . import kernel_facts, memory, pagemap
from .errors import (
    Error,
    MemoryUnavailableError,
    UffdAgainError,
    UffdError,
    UffdExistsError,
    UffdNotSupportedError,
    UffdPermissionError,
)
from .kernel_facts import FaultFlag, Feature, Ioctl, PageCategory, RegisterMode
from .memory import MEMORY_TYPES, Region
from .messages import ForkEvent, Message, PageFault, RemapEvent, RemoveEvent, UnmapEvent
from .native import FaultHandler, Pattern, Policy, Writer
from .uffd import ApiResult, Userfaultfd, open_fd, supported_features

__version__ = "0.1.0"  # the one place: pyproject.toml reads it from here

__all__ = [
    "MEMORY_TYPES", "ApiResult", "Error", "FaultFlag", "FaultHandler", "Feature", "ForkEvent",
    "Ioctl", "MemoryUnavailableError", "Message", "PageCategory", "PageFault", "Pattern",
    "Policy", "Region", "RegisterMode", "RemapEvent", "RemoveEvent", "UffdAgainError",
    "UffdError", "UffdExistsError", "UffdNotSupportedError", "UffdPermissionError", "UnmapEvent",
    "Userfaultfd", "Writer", "kernel_facts", "memory", "open_fd", "pagemap", "supported_features",
]
