# SPDX-License-Identifier: GPL-2.0-only
# cffi_modules is a setup() keyword only: the native code is compiled here at install time.
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# The checkout's files that `uffdwp run` and `uffdwp matrix` read at run time, as globs from the
# checkout's root. A wheel carries them inside the package at the same relative paths, where
# uffdwp/tree.py finds them when no checkout is around the package.
TREE = (
    "pytest.ini",
    "suites/*.py",
    "vms/kernels.cfg",
    "vms/uffdwp.config",
    "vms/*.sh",
    "vms/guest/*",
    "vms/reverts/*.patch",
)


def tree_files() -> list[Path]:
    return sorted(p for pattern in TREE for p in Path().glob(pattern) if p.is_file())


class BuildPyWithTree(build_py):
    """build_py, plus TREE copied into the package (not for an editable install: there the
    checkout itself is the tree)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for src in tree_files():
            dest = Path(self.build_lib, "uffdwp", src)
            self.mkpath(str(dest.parent))
            self.copy_file(str(src), str(dest))  # keeps the mode: the guest's scripts run

    def get_source_files(self) -> list[str]:  # what sdist takes along
        return [*super().get_source_files(), *map(str, tree_files())]


setup(
    cffi_modules=["uffdwp/csrc/build.py:ffibuilder"],
    cmdclass={"build_py": BuildPyWithTree},
)
