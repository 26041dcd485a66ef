# SPDX-License-Identifier: GPL-2.0-only
"""UFFDIO_API negotiation: the handshake rules every kernel must follow."""

from __future__ import annotations

import errno

import pytest

from uffdwp import kernel_facts as kf
from uffdwp.errors import UffdError
from uffdwp.kernel_facts import Ioctl
from uffdwp.uffd import Userfaultfd

from .capabilities import DEVICE_USABLE
from .uffdtest import MEM_ANON, requires, uffd_test

API_IOCTLS = Ioctl.REGISTER | Ioctl.UNREGISTER | Ioctl.API


@pytest.mark.parametrize("via", ["syscall", pytest.param("dev", marks=requires(
    needs=DEVICE_USABLE))])
@uffd_test(mem=None)
def test_open_and_handshake(via, supported):
    with Userfaultfd.open(via=via) as uffd:
        res = uffd.api(0)
    assert res.api == kf.UFFD_API
    assert res.features == supported
    assert res.ioctls & API_IOCTLS == API_IOCTLS


@uffd_test(mem=None)
def test_wrong_api_rejected(supported):
    with Userfaultfd.open() as uffd, pytest.raises(UffdError) as info:
        uffd.api(0, api=0xAB)
    assert info.value.errno == errno.EINVAL


@uffd_test(mem=None)
def test_unknown_feature_bit_rejected(supported):
    with Userfaultfd.open() as uffd, pytest.raises(UffdError) as info:
        uffd.api(1 << 63)
    assert info.value.errno == errno.EINVAL


@uffd_test(mem=None)
def test_second_api_rejected(supported):
    with Userfaultfd.open() as uffd:
        uffd.api(0)
        with pytest.raises(UffdError) as info:
            uffd.api(0)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("fact", [pytest.param(f, marks=requires(f.value), id=f.name)
                                  for f in kf.FEATURE_FACTS])
@uffd_test(mem=None)
def test_each_supported_feature_alone(fact, supported):
    with Userfaultfd.open() as uffd:
        res = uffd.api(fact.value)
    assert res.features & fact.value


def _accepted_alone(bit: int) -> bool:
    """UFFDIO_API asking for feature *bit* alone, on a fresh fd: accepted, or refused (EINVAL)."""
    with Userfaultfd.open() as uffd:
        try:
            uffd.api(1 << bit)
        except UffdError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return False
    return True


@uffd_test(mem=None)
def test_advertised_features_known(supported):
    """Every feature bit the kernel advertises is one kernel_facts knows; an unknown one is
    reported (a skip naming it: newer than this suite, or advertised without being there, which
    test_feature_accepted_iff_advertised tells apart)."""
    unknown = kf.unknown_feature_bits(supported)
    if unknown:
        # Not a declaration: the unknown bits are this test's finding, reported as a skip
        # (newer than this suite, not a fault of the kernel)
        pytest.skip("advertised feature bits unknown to uffdwp.kernel_facts: "
                    + ", ".join(f"bit {n}" for n in unknown))


@uffd_test(mem=None)
def test_feature_accepted_iff_advertised(supported):
    """Each of the 64 feature bits, asked for alone, is accepted if and only if the features=0
    handshake advertises it: a kernel must not advertise what it refuses, nor accept what it
    does not advertise (a feature silently dropped from the advertised set)."""
    refused = [n for n in range(64) if supported & (1 << n) and not _accepted_alone(n)]
    accepted = [n for n in range(64) if not supported & (1 << n) and _accepted_alone(n)]
    assert not refused, ("advertised but refused when asked for alone: "
                         + ", ".join(kf.feature_names(sum(1 << n for n in refused))))
    assert not accepted, ("not advertised but accepted when asked for alone: "
                          + ", ".join(kf.feature_names(sum(1 << n for n in accepted))))


@uffd_test(mem=MEM_ANON)
def test_register_without_mode_rejected(ctx, memtype):
    region = ctx.region(1)
    uffd = ctx.uffd()
    with pytest.raises(UffdError) as info:
        uffd.register(region.address, region.length, 0)
    assert info.value.errno == errno.EINVAL
