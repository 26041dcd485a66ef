"""`uffdwp matrix --via vagrant`: the Vagrantfile validates (offline, no provider needed), it and
the box builder use no private-range network, and the runner's own checks (SSH only on 127.0.0.1,
timeout watchdog, machine spec file) behave."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from uffdwp.matrix import libvirtd as lv
from uffdwp.matrix import vagrant as vg

REPO = Path(__file__).resolve().parents[1]
VAGRANTFILE = REPO / "Vagrantfile"
BUILD_BOX = REPO / "vms" / "build-box.sh"
needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None,
                                   reason="vagrant not installed (ci/install-matrix-deps.sh "
                                          "--vagrant)")


def _vagrant_env(tmp_path: Path) -> dict:
    return {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_DOTFILE_PATH": str(tmp_path / ".vagrant")}


def _project(tmp_path: Path, spec: dict | None = None) -> Path:
    """A copy of the Vagrantfile in a directory of its own, with or without the spec file."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(VAGRANTFILE, proj / "Vagrantfile")
    if spec is not None:
        (proj / "vms" / "work").mkdir(parents=True)
        (proj / "vms" / "work" / "vagrant-kernels.json").write_text(json.dumps(spec))
    return proj


def _validate(proj: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=proj,
                          env=_vagrant_env(tmp_path), capture_output=True, text=True, timeout=300)


@needs_vagrant
def test_vagrantfile_validates_without_spec(tmp_path):
    p = _validate(_project(tmp_path), tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validated successfully" in p.stdout


@needs_vagrant
def test_vagrantfile_validates_with_spec(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    spec = {"6.12": {"vmlinuz": "/boot/vmlinuz-x", "initrd": "/tmp/initrd-x", "port": 2310,
                     "out": str(out), "accel": "qemu"},
            "5.10": {"vmlinuz": "/boot/vmlinuz-y", "initrd": "/tmp/initrd-y", "port": 2311,
                     "out": str(out), "accel": "kvm"}}
    p = _validate(_project(tmp_path, spec), tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


@needs_vagrant
def test_python_vagrant_status_offline(tmp_path):
    """python-vagrant lists the machines without libvirt running or a box being fetched."""
    import vagrant

    v = vagrant.Vagrant(root=str(_project(tmp_path)), env=_vagrant_env(tmp_path))
    names = {s.name: s.state for s in v.status()}
    assert set(names) == {"k5_10", "k6_1", "k6_12", "k7_2"}
    assert set(names.values()) == {"not_created"}


def _addresses(text: str) -> list[ipaddress.IPv4Network]:
    nets = []
    for m in re.finditer(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?![\d.])", text):
        try:
            nets.append(ipaddress.ip_network(m.group(1) + (m.group(2) or ""), strict=False))
        except ValueError:
            pass
    return nets


@pytest.mark.parametrize("path", [VAGRANTFILE, BUILD_BOX], ids=lambda p: p.name)
def test_no_private_range_network(path):
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    text = path.read_text()
    found = [n for n in _addresses(text) if any(n.overlaps(p) for p in private)]
    assert not found, f"{path.name} names private-range addresses: {found}"
    if path == VAGRANTFILE:
        assert ":private_network" not in text
        assert re.search(r"mgmt_attach\s*=\s*false", text)
        # SSH forwarded on loopback only, guest side of QEMU's user network not in 10.0.2.0/24
        assert "hostfwd=tcp:127.0.0.1:" in text
        assert "net=198.18.0.0/24" in text
        assert 'config.ssh.host = "127.0.0.1"' in text


def test_ssh_target_must_be_loopback():
    vg.check_ssh_target({"HostName": "127.0.0.1", "Port": "2310"})
    for host in ("198.19.0.15", "192.168.121.5", None):
        with pytest.raises(RuntimeError):
            vg.check_ssh_target({"HostName": host})


def test_machine_and_domain_names():
    assert vg.machine_name("6.12") == "k6_12"
    assert vg.machine_name("5.10") == "k5_10"
    assert vg.domain_name("k6_12") == f"{vg.REPO_ROOT.name}_k6_12"


def test_watchdog_kills_the_domain(monkeypatch):
    calls = []
    monkeypatch.setattr(vg, "virsh", lambda *a: calls.append(a))
    with vg._watchdog(1.0, "k6_12") as dog:
        time.sleep(1.5)
    assert dog["fired"]
    assert calls == [("destroy", vg.domain_name("k6_12"))]
    calls.clear()
    with vg._watchdog(5.0, "k6_12") as dog:
        pass
    time.sleep(0.1)
    assert not dog["fired"] and not calls


def test_spec_file_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(vg, "SPEC_FILE", tmp_path / "w" / "vagrant-kernels.json")
    spec = {"6.12": {"vmlinuz": "/v", "initrd": "/i", "port": 2310, "out": "/o", "accel": "qemu"}}
    vg.write_spec(spec)
    assert json.loads(vg.SPEC_FILE.read_text()) == spec


def test_root_qemu_conf_replaces_user_and_group():
    text = lv.root_qemu_conf('# user = "qemu"\nuser = "libvirt-qemu"\n group = "kvm"\n'
                                    'dynamic_ownership = 1\n')
    assert 'user = "libvirt-qemu"' not in text and 'group = "kvm"' not in text
    assert "# user = \"qemu\"" in text and "dynamic_ownership = 1" in text
    assert text.rstrip().endswith('user = "+0"\ngroup = "+0"')


def test_qemu_runs_as_root_reads_the_daemons_view(tmp_path, monkeypatch):
    conf = tmp_path / "qemu.conf"
    monkeypatch.setattr(lv, "QEMU_CONF", conf)
    conf.write_text('#user = "+0"\n')
    assert not lv.qemu_runs_as_root(os.getpid())
    conf.write_text(lv.root_qemu_conf(""))
    assert lv.qemu_runs_as_root(os.getpid())
    assert not lv.qemu_runs_as_root(2**22 + 12345)  # no such process
