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


@uffd_test(mem=MEM_ANON)
def test_register_without_mode_rejected(ctx, memtype):
    region = ctx.region(1)
    uffd = ctx.uffd()
    with pytest.raises(UffdError) as info:
        uffd.register(region.address, region.length, 0)
    assert info.value.errno == errno.EINVAL
