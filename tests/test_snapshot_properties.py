# SPDX-License-Identifier: GPL-2.0-only
"""Property: whatever regions, memory types, writers and target a caller picks, and however the
image is damaged afterwards, take()/load()/restore() end in a correct image or a clear
exception (ValueError for what the caller got wrong, SnapshotError for what the snapshot could
not do, ImageError for a damaged image) — never a wrong image, a crash or a hang."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uffdwp import memory
from uffdwp.kernel_facts import Feature
from uffdwp.native import Pattern, Writer
from uffdwp.snapshot import ImageError, SnapshotError, load, restore, take
from uffdwp.snapshot.check import WriterLog, check_image, fill_initial, value_base
from uffdwp.snapshot.image import RegionInfo
from uffdwp.uffd import Userfaultfd

PS = memory.PAGE_SIZE
try:
    with Userfaultfd.open("auto") as _probe:
        OFFERED = _probe.api(0).features
except OSError:
    OFFERED = Feature(0)
TYPES = ["anon"] + (["shmem", "shmem-private"] if OFFERED & Feature.WP_HUGETLBFS_SHMEM else [])

pytestmark = pytest.mark.skipif(not OFFERED & Feature.PAGEFAULT_FLAG_WP,
                                reason="feature PAGEFAULT_FLAG_WP (mainline 5.7) absent or no "
                                       "userfaultfd here")

region_specs = st.lists(st.tuples(st.sampled_from(TYPES), st.integers(1, 300),
                                  st.integers(0, 2)), min_size=1, max_size=3)
# what the caller gets wrong, if anything: nothing, an overlap, a duplicate, a misalignment
mistakes = st.sampled_from([None, None, None, "overlap", "twice", "unaligned"])
damages = st.one_of(st.none(), st.tuples(st.sampled_from(["flip", "truncate", "splice"]),
                                         st.floats(0, 1, exclude_max=True), st.integers(0, 255)))


@contextlib.contextmanager
def target_of(kind: str, path: str):
    """A target spec whose image ends up in *path*."""
    if kind == "file":
        yield f"file:{path}"
    elif kind == "exec":
        yield f"exec:cat > {path}"
    else:  # an fd: a pipe, drained into the file by a thread
        read_end, write_end = os.pipe()

        def drain() -> None:
            with open(path, "wb") as out, os.fdopen(read_end, "rb") as pipe:
                while chunk := pipe.read(1 << 16):
                    out.write(chunk)

        t = threading.Thread(target=drain)
        t.start()
        try:
            yield f"fd:{write_end}"
        finally:
            os.close(write_end)
            t.join(30)


def damaged(data: bytes, how: str, where: float, byte: int) -> bytes:
    at = int(where * len(data))
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1:]
    if how == "truncate":
        return data[:at]
    return data[:at] + data[at:at + 4096] + data[at:]  # a piece repeated


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=region_specs, mistake=mistakes, kind=st.sampled_from(["file", "exec", "fd"]),
       populate=st.sampled_from([None, True]), damage=damages)
def test_any_snapshot_is_a_correct_image_or_a_clear_error(specs, mistake, kind, populate,
                                                         damage, tmp_path):
    path = str(tmp_path / "snap.img")
    with contextlib.ExitStack() as stack:
        regions = [stack.enter_context(memory.allocate(t, pages * PS)) for t, pages, _ in specs]
        infos = [RegionInfo(r.address, r.length, r.page_size, r.memtype) for r in regions]
        initial = [fill_initial(i) for i in infos]
        given_regions: list = list(infos)
        if mistake == "overlap" and regions[0].pages > 1:
            r0 = regions[0]
            given_regions.append((r0.address + PS, r0.length - PS, PS, r0.memtype))
        elif mistake == "twice":
            given_regions.append(infos[0])
        elif mistake == "unaligned":
            given_regions[0] = (infos[0].address + 8, infos[0].length, PS, infos[0].memtype)
        else:
            mistake = None
        writers = []
        for ri, (r, (_, _, n)) in enumerate(zip(regions, specs)):
            for _ in range(n):
                w = len(writers)
                writers.append((stack.enter_context(Writer(
                    r.address, r.length, offset_in_page=8 * w, pattern=Pattern.RANDOM,
                    rate=50_000, seed=w + 1, value_base=value_base(w))), ri, value_base(w)))
        try:
            with target_of(kind, path) as target:
                result = take(given_regions, target, timeout=60, populate=populate)
        except ValueError:
            assert mistake, "a valid region set was refused"
            return
        assert not mistake, f"{mistake} was accepted"
        for w, _, _ in writers:
            w.request_stop()
        for w, _, _ in writers:
            assert w.wait(10), "a writer is still blocked after the snapshot"
        logs = [WriterLog.from_writer(w, ri, base, result.stats.t_frozen_ns)
                for w, ri, base in writers]

    image = load(path)
    report = check_image(image, initial, logs, result.stats.t_protect_ns,
                         result.stats.t_frozen_ns)
    assert report.ok, str(report)
    assert result.image_bytes == os.path.getsize(path)

    # restore into fresh memory: the same bytes come back
    with contextlib.ExitStack() as stack:
        fresh = [stack.enter_context(memory.allocate("anon", i.length)) for i in infos]
        restore(path, [f.address for f in fresh])
        assert [f.read() for f in fresh] == [bytes(c) for c in image.contents]

    if damage is not None:
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(damaged(data, *damage))
        with pytest.raises(ImageError):
            load(path)


def test_snapshot_error_leaves_nothing_protected(tmp_path):
    """The clear-exception side of the property on its own: a target that fails midway."""
    from uffdwp import pagemap

    with memory.allocate("anon", 64 << 20) as r:
        fill_initial(RegionInfo(r.address, r.length, PS, "anon"))
        with pytest.raises(SnapshotError):
            take([r], "exec:head -c 100000 > /dev/null", timeout=60)
        assert not any(pagemap.uffd_wp(r.address, r.length))
