# SPDX-License-Identifier: GPL-2.0-only
"""Vagrant: the Vagrantfile validates and lists the catalogue's machines (offline, no provider
needed), stops `vagrant up` before setup saying what to run, and uses no private-range network
(nor does the box builder); the before-up preparation writes what the Vagrantfile applies; the
runner's own checks (SSH only on 127.0.0.1, timeout watchdog) behave."""

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
from uffdwp.matrix import vagrantup as vu
from uffdwp.matrix.catalogue import host_kernel, load_catalogue
from uffdwp.matrix.debfetch import KernelFiles
from uffdwp.matrix.guestcmd import write_guest_files
from uffdwp.matrix.runner import Target
from uffdwp.matrix.vagrantup import ACCEL_ENV

REPO = Path(__file__).resolve().parents[1]
VAGRANTFILE = REPO / "Vagrantfile"
BUILD_BOX = REPO / "vms" / "build-box.sh"
needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None,
                                   reason="vagrant not installed (ci/install-matrix-deps.sh "
                                          "--vagrant)")


def _vagrant_env(tmp_path: Path) -> dict:
    # VAGRANT_HOME of its own: no box there, whatever this host has
    return {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_DOTFILE_PATH": str(tmp_path / ".vagrant"),
            "VAGRANT_HOME": str(tmp_path / "vagrant.d")}


def _project(tmp_path: Path, catalogue: str | None = None,
             machines: dict[str, dict] | None = None) -> Path:
    """A copy of the Vagrantfile in a directory of its own, with the project's catalogue (or the
    given one) and the given vms/work/vagrant/<kernel>.json machine specs."""
    proj = tmp_path / "proj"
    (proj / "vms").mkdir(parents=True)
    shutil.copy(VAGRANTFILE, proj / "Vagrantfile")
    if catalogue is None:
        shutil.copy(REPO / "vms" / "kernels.cfg", proj / "vms" / "kernels.cfg")
    else:
        (proj / "vms" / "kernels.cfg").write_text(catalogue)
    for kernel, spec in (machines or {}).items():
        (proj / "vms" / "work" / "vagrant").mkdir(parents=True, exist_ok=True)
        (proj / "vms" / "work" / "vagrant" / f"{kernel}.json").write_text(json.dumps(spec))
    return proj


def _vagrant(proj: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["vagrant", *args], cwd=proj, env=_vagrant_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


def _host_machine() -> set[str]:
    return {"khost"} if host_kernel().bootable else set()


@needs_vagrant
def test_vagrantfile_validates_without_machine_specs(tmp_path):
    p = _vagrant(_project(tmp_path), tmp_path, "validate", "--ignore-provider")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validated successfully" in p.stdout


@needs_vagrant
def test_vagrantfile_validates_with_machine_specs(tmp_path):
    machines = {"6.12": {"vmlinuz": "/boot/vmlinuz-x", "initrd": "/tmp/initrd-x", "accel": "tcg"},
                "5.10": {"vmlinuz": "/boot/vmlinuz-y", "initrd": "/tmp/initrd-y", "accel": "kvm"}}
    p = _vagrant(_project(tmp_path, machines=machines), tmp_path, "validate", "--ignore-provider")
    assert p.returncode == 0, p.stdout + p.stderr


@needs_vagrant
def test_python_vagrant_status_lists_the_catalogue(tmp_path):
    """python-vagrant lists the catalogue's machines without libvirt running or a box being
    fetched, whatever machine specs earlier runs left."""
    import vagrant

    machines = {"6.1": {"vmlinuz": "/v", "initrd": "/i", "accel": "tcg"}}
    v = vagrant.Vagrant(root=str(_project(tmp_path, machines=machines)),
                        env=_vagrant_env(tmp_path))
    names = {s.name: s.state for s in v.status()}
    expected = {vg.machine_name(k.name) for k in load_catalogue().values() if k.source != "host"}
    assert set(names) == expected | _host_machine()
    assert set(names.values()) == {"not_created"}


@needs_vagrant
def test_status_follows_another_catalogue(tmp_path):
    catalogue = ("[6.6]\nsource = local\nvmlinuz = /boot/v\nmodules = /lib/modules/x\n\n"
                 "[6.15]\nsource = debian\nsuite = sid\npackage = linux-image-amd64\n\n"
                 "[host]\nsource = host\n")
    p = _vagrant(_project(tmp_path, catalogue=catalogue), tmp_path, "status")
    assert p.returncode == 0, p.stdout + p.stderr
    listed = set(re.findall(r"^(k\S+)\s+not created", p.stdout, re.M))
    assert listed == {"k6_6", "k6_15"} | _host_machine()


@needs_vagrant
def test_up_before_setup_says_what_to_run(tmp_path):
    """No box, no .venv: `vagrant up` stops before anything is fetched or created, naming the
    setup command (instead of searching the public box catalogue)."""
    p = _vagrant(_project(tmp_path), tmp_path, "up", "k6_1")
    assert p.returncode != 0
    said = "the uffdwp-debian box and .venv missing: run ./bootstrap.sh --vagrant"
    assert said in p.stdout + p.stderr
    assert not (tmp_path / ".vagrant" / "machines" / "k6_1" / "libvirt" / "id").exists()


def test_vagrant_env_passes_output_dir_and_accel(tmp_path):
    env = vg.vagrant_env(tmp_path, "kvm")
    assert env[vg.OUT_ENV] == str(tmp_path) and env[ACCEL_ENV] == "kvm"
    assert vg.vagrant_env(tmp_path, "tcg")[ACCEL_ENV] == "tcg"
    # the names the Vagrantfile and the trigger read
    assert vg.OUT_ENV in VAGRANTFILE.read_text()
    assert ACCEL_ENV == "UFFDWP_VAGRANT_ACCEL"


def _fake_target(tmp_path: Path, spec, via="qemu", error=""):
    kernel = KernelFiles(spec.name, "6.1.0-50-amd64", tmp_path / "vmlinuz", tmp_path / "mods",
                         "linux-image-6.1.0-50-amd64", "6.1.176-1")
    return Target(spec, via, kernel if via == "qemu" else None,
                  tmp_path / "initrd.gz" if via == "qemu" else None, error=error,
                  note="host kernel has no /boot/vmlinuz" if via == "direct" else "")


def test_prepare_machine_writes_what_the_vagrantfile_applies(tmp_path, monkeypatch):
    monkeypatch.setattr(vu, "MACHINES_DIR", tmp_path / "machines")
    monkeypatch.setattr(vu, "prepare", lambda spec, log: _fake_target(tmp_path, spec))
    monkeypatch.setattr(vu, "choose_accel", lambda accel, kernel: ("tcg", f"asked {accel}"))
    m = vu.prepare_machine("6.1", accel="tcg")
    assert json.loads(vu.machine_file("6.1").read_text()) == m
    assert m["vmlinuz"] == str(tmp_path / "vmlinuz") and m["initrd"] == str(tmp_path / "initrd.gz")
    assert m["accel"] == "tcg" and m["accel_reason"] == "asked tcg"
    text = VAGRANTFILE.read_text()
    for key in ("vmlinuz", "initrd", "accel"):
        assert f'spec["{key}"]' in text


@pytest.mark.parametrize("kernel, via, error, message", [
    ("9.99", "qemu", "", "unknown kernel '9.99'"),
    ("6.1", "qemu", "prepare failed: no network", "kernel 6.1: prepare failed: no network"),
    ("host", "direct", "", "kernel host: host kernel has no /boot/vmlinuz"),
])
def test_prepare_machine_errors_say_why(tmp_path, monkeypatch, kernel, via, error, message):
    monkeypatch.setattr(vu, "MACHINES_DIR", tmp_path / "machines")
    monkeypatch.setattr(vu, "prepare", lambda spec, log: _fake_target(tmp_path, spec, via, error))
    with pytest.raises(vu.MachineError, match=re.escape(message)):
        vu.prepare_machine(kernel)
    assert not vu.machine_file(kernel).exists()


def test_guest_scripts_parse_and_share_one_environment(tmp_path):
    for script in ("box-entry.sh", "vagrant-run.sh", "env.sh"):
        subprocess.run(["sh", "-n", str(REPO / "vms" / "guest" / script)], check=True)
    run_sh = write_guest_files(tmp_path, "6.1", "true").read_text()
    assert f". {REPO / 'vms' / 'guest' / 'env.sh'}" in run_sh
    assert '. "$1/vms/guest/env.sh"' in (REPO / "vms" / "guest" / "vagrant-run.sh").read_text()
    build = BUILD_BOX.read_text()
    assert "vms/guest/box-entry.sh" in build and "usr/local/bin/uffdwp" in build


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
