"""Pure host-side pieces of wsd-rxe-vm: apt source parsing, the cache key,
guest paths, perftest result parsing, serial-console marker handling."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import pytest

from wsd_tools.rxe_vm import cli, guest, hostenv, image, vm

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.invalid/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example.invalid/debian
Suites: trixie
Components: main
"""

ONE_LINE = """\
# comment
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example.invalid/debian bookworm main non-free
deb-src http://one.example.invalid/debian bookworm main
deb http://one.example.invalid/debian bookworm-updates main # trailing
"""


def test_deb822_sources():
    srcs = hostenv._sources_from_deb822(DEB822)
    assert [s.uri for s in srcs] == ["http://mirror.example.invalid/debian",
                                     "http://security.example.invalid/debian-security"]
    assert srcs[0].suites == ("bookworm", "bookworm-updates")
    assert srcs[0].components == ("main", "contrib")
    assert srcs[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_one_line_sources():
    srcs = hostenv._sources_from_one_line(ONE_LINE)
    assert len(srcs) == 2
    assert srcs[0].uri == "http://one.example.invalid/debian"
    assert srcs[0].suites == ("bookworm",) and srcs[0].components == ("main", "non-free")
    assert srcs[0].signed_by == "/usr/share/keyrings/k.gpg"
    assert srcs[1].suites == ("bookworm-updates",) and srcs[1].components == ("main",)


def test_mirror_choice_skips_security_and_takes_updates(monkeypatch):
    monkeypatch.setattr(hostenv, "os_release", lambda: {"ID": "debian", "VERSION_CODENAME": "bookworm"})
    monkeypatch.setattr(hostenv, "apt_sources", lambda: list(reversed(hostenv._sources_from_deb822(DEB822))))
    m = hostenv.debian_mirror()
    assert m.uri == "http://mirror.example.invalid/debian"
    assert m.suite == "bookworm" and m.extra_suites == ("bookworm-updates",)


def test_mirror_requires_debian(monkeypatch):
    monkeypatch.setattr(hostenv, "os_release", lambda: {"ID": "ubuntu"})
    with pytest.raises(hostenv.HostError, match="not Debian"):
        hostenv.debian_mirror()


def _spec(**over) -> image.Spec:
    base = dict(mirror=hostenv.Mirror("http://m.example.invalid/debian", "bookworm", (), None),
                kernel_package="linux-image-6.1.0-9-amd64", kernel_package_version="6.1.1-1",
                package_versions=(("python3", "3.11.2-1"), ("rdma-core", "44.0-2")))
    base.update(over)
    return image.Spec(**base)


def test_cache_key_tracks_kernel_and_packages_not_mirror_host():
    a = _spec()
    assert a.key.startswith("6.1.0-9-amd64-") and a.key == _spec().key
    assert _spec(package_versions=(("python3", "3.11.2-2"), ("rdma-core", "44.0-2"))).key != a.key
    assert _spec(kernel_package_version="6.1.1-2").key != a.key
    # Another mirror of the same archive serves the same packages: same image.
    other = hostenv.Mirror("http://n.example.invalid/debian", "bookworm", (), None)
    assert _spec(mirror=other).key == a.key


def test_guest_project_path_and_env():
    assert vm.guest_project_path(Path("/work/main")) == "/work/main"
    assert vm.guest_project_path(Path("/usr/src/wsd")) == "/work"
    assert vm.guest_project_path(Path("/root/wsd")) == "/work"
    env = vm.guest_env("/work/main")
    assert env["PYTHONPATH"].split(":") == ["/work/main", "/work/main/providers", "/work/main/native",
                                            "/work/main/tools", "/work/main/smb"]
    assert env["WSD_RDMA_ADDR"] == "192.0.2.1" and env["WSD_RDMA_GID_INDEX"] == "1"


def test_qemu_has_no_network_card(tmp_path):
    img = image.Image(tmp_path)
    cmd = vm.qemu_command(img, tmp_path, tmp_path, smp=1, mem_mib=256)
    assert cmd[cmd.index("-nic") + 1] == "none"
    assert "-nodefaults" in cmd
    assert not any(a.startswith(("-netdev", "user,", "tap,")) for a in cmd)
    assert sum(1 for a in cmd if a.startswith("virtio-9p-pci")) == 3
    assert any("readonly=on" in a and str(img.rootfs) in a for a in cmd)


PERF_SAMPLE = """\
== ib_send_bw size=64 iters=1000 ==
 #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]
 64         1000             0.025726            0.011251            0.021974
== ib_send_lat size=64 iters=1000 ==
 #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]
 64      1000          10.19          2163.74      10.68    \t       19.63       \t84.41  \t\t506.11  \t\t2163.74
---------------------------------------------------------------------------------------
== ib_write_lat size=64 iters=2 ==
 #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]
 64      2          9.65           9.70      9.65     \t       9.67       \t-nan \t\t9.70 \t\t9.70
"""


def test_parse_perftest():
    rows = cli.parse_perftest(PERF_SAMPLE)
    assert rows[0] == {"tool": "ib_send_bw", "bytes": 64, "iterations": 1000, "bw_peak_gbps": 0.025726,
                       "bw_avg_gbps": 0.011251, "msg_rate_mpps": 0.021974}
    assert rows[1]["tool"] == "ib_send_lat" and rows[1]["t_typical_us"] == 10.68
    assert rows[1]["p999_us"] == 2163.74
    assert rows[2]["tool"] == "ib_write_lat" and rows[2]["iterations"] == 2
    assert math.isnan(rows[2]["t_stdev_us"]) and rows[2]["t_avg_us"] == 9.67
    assert len(rows) == 3


def _fake_qemu(tmp_path: Path, console: str, exit_status: int = 0) -> list[str]:
    """A stand-in for QEMU's serial output (the console protocol is what is under test)."""
    script = tmp_path / "fake_qemu.py"
    script.write_text(f"import sys\nsys.stdout.write({console!r})\nsys.exit({exit_status})\n")
    return [sys.executable, str(script)]


def test_console_markers_give_output_and_status(tmp_path):
    console = ("SeaBIOS noise\r\n" + guest.MARK_BEGIN + "\r\nhello\r\nworld\r\n\r\n"
               + guest.MARK_EXIT + "7@@\r\n")
    out = io.BytesIO()
    res = vm._drive(_fake_qemu(tmp_path, console), tmp_path, 30, False, out, io.StringIO())
    assert res.status == 7 and res.harness_error is None
    assert out.getvalue() == b"hello\nworld\n\n" == res.output
    # Output without a final newline stays byte-exact.
    console = guest.MARK_BEGIN + "\r\nno newline" + guest.MARK_EXIT + "0@@\r\n"
    out = io.BytesIO()
    res = vm._drive(_fake_qemu(tmp_path, console), tmp_path, 30, False, out, io.StringIO())
    assert res.status == 0 and out.getvalue() == b"no newline"


def test_console_setup_failure_and_missing_marker(tmp_path):
    err = io.StringIO()
    res = vm._drive(_fake_qemu(tmp_path, guest.MARK_SETUP_FAILED + " rxe set-up\r\n"), tmp_path, 30,
                    False, io.BytesIO(), err)
    assert res.status == 125 and "rxe set-up" in res.harness_error
    res = vm._drive(_fake_qemu(tmp_path, guest.MARK_BEGIN + "\r\npartial", 1), tmp_path, 30, False,
                    io.BytesIO(), io.StringIO())
    assert res.status == 125 and "without an exit marker" in res.harness_error


def test_console_timeout(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text("import time\nprint('" + guest.MARK_BEGIN + "', flush=True)\ntime.sleep(60)\n")
    res = vm._drive([sys.executable, str(script)], tmp_path, 2, False, io.BytesIO(), io.StringIO())
    assert res.status == 124 and res.total_seconds < 20


def test_missing_host_tools_are_installed_with_apt_get(tmp_path, monkeypatch):
    """A missing tool makes the harness apt-get install its package (a stand-in apt-get here)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "apt.log"
    fake_apt = bindir / "apt-get"
    fake_apt.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {log}\n"
        f"printf '#!/bin/sh\\nexit 0\\n' > {bindir}/wsd-fake-tool && chmod +x {bindir}/wsd-fake-tool\n")
    fake_apt.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.setattr(hostenv, "HOST_TOOLS", {"wsd-fake-tool": "wsd-fake-pkg"})
    monkeypatch.setattr(hostenv, "is_root", lambda: True)
    monkeypatch.setattr(hostenv, "static_busybox", lambda: "/bin/busybox")
    assert hostenv.missing_tools() == ["wsd-fake-tool"]
    hostenv.ensure_host_tools(install=True, log=io.StringIO())
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].endswith("install --no-install-recommends wsd-fake-pkg")
    assert "DPkg::Lock::Timeout=600" in calls[0]
    assert hostenv.missing_tools() == []


def test_missing_host_tools_without_root_is_a_host_error(monkeypatch):
    monkeypatch.setattr(hostenv, "HOST_TOOLS", {"wsd-fake-tool-absent": "wsd-fake-pkg"})
    monkeypatch.setattr(hostenv, "is_root", lambda: False)
    with pytest.raises(hostenv.HostError, match="wsd-fake-pkg"):
        hostenv.ensure_host_tools(install=True, log=io.StringIO())


def _elf_with_note(name: bytes, ntype: int) -> bytes:
    """A minimal ELF64 little-endian image whose one PT_NOTE holds one note."""
    import struct
    desc = struct.pack("<I", 0x1000000)
    note = struct.pack("<III", len(name) + 1, len(desc), ntype) + name + b"\0"
    note += b"\0" * (-len(note) % 4) + desc
    ehdr = bytearray(64)
    ehdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", ehdr, 0x20, 64)            # e_phoff
    struct.pack_into("<HH", ehdr, 0x36, 56, 1)         # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)  # PT_NOTE
    return bytes(ehdr) + phdr + note


def test_pvh_vmlinux_is_found_inside_a_compressed_kernel():
    import gzip
    import lzma
    pvh = _elf_with_note(b"Xen", 18)
    assert image._has_pvh_note(pvh)
    assert not image._has_pvh_note(_elf_with_note(b"Xen", 17))
    assert not image._has_pvh_note(_elf_with_note(b"GNU", 18))
    setup = b"MZ" + bytes(500)                         # the bzImage's real-mode part
    assert image.extract_pvh_vmlinux(setup + lzma.compress(pvh, format=lzma.FORMAT_XZ) + b"trailer") == pvh
    assert image.extract_pvh_vmlinux(setup + gzip.compress(pvh)) == pvh
    no_pvh = _elf_with_note(b"Xen", 17)
    assert image.extract_pvh_vmlinux(setup + lzma.compress(no_pvh, format=lzma.FORMAT_XZ)) is None
    assert image.extract_pvh_vmlinux(setup) is None
