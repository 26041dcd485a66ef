# SPDX-License-Identifier: GPL-2.0-only
"""cffi builder for uffdwp._native (compiled at install by setup.py's cffi_modules)."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

# Values cffi reads from the compiled headers, so tests can hold them against kernel_facts.
_HEADER_CONSTANTS = """
#define UFFDIO_API ...
#define UFFDIO_REGISTER ...
#define UFFDIO_UNREGISTER ...
#define UFFDIO_WAKE ...
#define UFFDIO_COPY ...
#define UFFDIO_ZEROPAGE ...
#define UFFDIO_MOVE ...
#define UFFDIO_WRITEPROTECT ...
#define UFFDIO_CONTINUE ...
#define UFFDIO_POISON ...
#define USERFAULTFD_IOC_NEW ...
#define PAGEMAP_SCAN ...
#define UFFD_FEATURE_WP_UNPOPULATED ...
#define UFFD_FEATURE_POISON ...
#define UFFD_FEATURE_WP_ASYNC ...
#define UFFD_FEATURE_MOVE ...
#define UFFDIO_CONTINUE_MODE_WP ...
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ...
"""

_STRUCTS = """
struct uffdio_api { uint64_t api; uint64_t features; uint64_t ioctls; };
struct uffdio_range { uint64_t start; uint64_t len; };
struct uffdio_register { struct uffdio_range range; uint64_t mode; uint64_t ioctls; };
struct uffdio_copy { uint64_t dst; uint64_t src; uint64_t len; uint64_t mode; int64_t copy; };
struct uffdio_zeropage { struct uffdio_range range; uint64_t mode; int64_t zeropage; };
struct uffdio_writeprotect { struct uffdio_range range; uint64_t mode; };
struct uffdio_continue { struct uffdio_range range; uint64_t mode; int64_t mapped; };
struct uffdio_poison { struct uffdio_range range; uint64_t mode; int64_t updated; };
struct uffdio_move { uint64_t dst; uint64_t src; uint64_t len; uint64_t mode; int64_t move; };
void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
int munmap(void *addr, size_t length);
int madvise(void *addr, size_t length, int advice);
int mprotect(void *addr, size_t length, int prot);
void *mremap(void *old_address, size_t old_size, size_t new_size, int flags, ...);
struct page_region { uint64_t start; uint64_t end; uint64_t categories; };
struct pm_scan_arg {
    uint64_t size; uint64_t flags; uint64_t start; uint64_t end; uint64_t walk_end;
    uint64_t vec; uint64_t vec_len; uint64_t max_pages; uint64_t category_inverted;
    uint64_t category_mask; uint64_t category_anyof_mask; uint64_t return_mask;
};
"""


# Every *_native.h declares a part of the module that Python sees; cffi reads them as cdef. The
# other headers are internal to the C files. Every .c here is compiled into the module.
HEADERS = sorted(p.name for p in HERE.glob("*_native.h"))
SOURCES = sorted(f"uffdwp/csrc/{p.name}" for p in HERE.glob("*.c"))  # relative: setuptools


def _native_cdef() -> str:
    """The public prototypes of the *_native.h headers, minus preprocessor lines."""
    lines = []
    for header in HEADERS:
        text = (HERE / header).read_text()
        lines += [ln for ln in text.splitlines() if not ln.startswith("#")]
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(_HEADER_CONSTANTS + _STRUCTS + _native_cdef())
ffibuilder.set_source(
    "uffdwp._native",
    "#include <sys/mman.h>\n#include \"uffd_compat.h\"\n"
    + "".join(f'#include "{h}"\n' for h in HEADERS),
    sources=SOURCES,
    include_dirs=["uffdwp/csrc"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    import os

    os.chdir(HERE.parent.parent)
    ffibuilder.compile(verbose=True)
