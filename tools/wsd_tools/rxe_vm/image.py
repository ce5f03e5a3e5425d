"""Building and caching the rxe VM image.

An image is a directory ``<cache>/<key>/`` holding

- ``vmlinuz``     -- Debian's stock kernel (from ``linux-image-<ver>``, extracted with ``dpkg -x``),
- ``initrd.img``  -- a busybox initramfs (9p/virtio/overlay modules + ``/init``),
- ``rootfs/``     -- a ``debootstrap --variant=minbase`` root with pyverbs, rdma-core,
                     perftest, ... and the kernel's whole ``/lib/modules/<ver>`` tree,
- ``manifest.json`` -- the key's inputs and the versions actually installed.

The key is a hash of the recipe version, the mirror/suite, the kernel package
and the candidate versions (host apt lists) of every guest package, so a new
kernel or package version makes a new image; an unchanged one costs only the
boot.  Builds run in a temporary directory next to the cache entry and are
renamed into place atomically, under a lock.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import guest, hostenv

# Bump when the image layout or the initramfs changes (stage 2 is not part of
# the image, so editing it needs no bump).
RECIPE_VERSION = "1"

GUEST_PACKAGES = (
    "python3",
    "python3-pyverbs",
    "python3-pytest",
    "python3-pytest-timeout",
    "python3-cffi-backend",   # enough for the prebuilt wsd_ring; python3-cffi (pycparser) breaks debootstrap
    "python3-zmq",
    "python3-cryptography",
    "rdma-core",
    "ibverbs-utils",
    "ibverbs-providers",
    "rdmacm-utils",
    "perftest",
    "iproute2",
    "kmod",
    "procps",
)

# Modules the initramfs needs to reach the 9p root (dependencies resolved with
# the host's modprobe against the extracted module tree).
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

KERNEL_META_PACKAGE = "linux-image-amd64"


class BuildError(Exception):
    """The image build failed; the message says where."""


def _has_pvh_note(elf: bytes) -> bool:
    """True for an ELF64 with a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, 18),
    which QEMU boots directly with ``-kernel``."""
    import struct
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    e_phoff, = struct.unpack_from("<Q", elf, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(e_phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", elf, e_phoff + i * e_phentsize)
        if p_type != 4:       # PT_NOTE
            continue
        off, end = p_offset, p_offset + p_filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, off)
            name = elf[off + 12:off + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            off += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def extract_pvh_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed kernel inside a bzImage, if it is a PVH-bootable ELF."""
    import lzma
    import zlib
    candidates = []
    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd")):
        i = bzimage.find(magic)
        if i >= 0:
            candidates.append((i, kind))
    for i, kind in sorted(candidates):
        try:
            if kind == "xz":
                data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[i:])
            elif kind == "gzip":
                data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[i:])
            else:
                zstd = hostenv._which("zstd")
                if zstd is None:
                    continue
                r = subprocess.run([zstd, "-dc"], input=bzimage[i:], capture_output=True)
                data = r.stdout
        except (lzma.LZMAError, zlib.error):
            continue
        if _has_pvh_note(data):
            return data
    return None


def cache_root() -> Path:
    env = os.environ.get("WSD_RXE_VM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wsd" / "rxe-vm"


def _apt_show(packages: list[str]) -> dict[str, dict[str, str]]:
    """Candidate stanza (Version, Depends) per package from the host's apt lists."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages],
                       capture_output=True, text=True)
    out: dict[str, dict[str, str]] = {}
    for para in r.stdout.split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line and line[0] not in " \t" and ":" in line:
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
        if "Package" in fields and fields["Package"] not in out:
            out[fields["Package"]] = fields
    return out


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything the image depends on; its hash is the cache key."""
    mirror: hostenv.Mirror
    kernel_package: str           # linux-image-6.1.0-NN-amd64
    kernel_package_version: str
    package_versions: tuple[tuple[str, str], ...]

    @property
    def kernel_release(self) -> str:
        return self.kernel_package.removeprefix("linux-image-")

    @property
    def key(self) -> str:
        doc = json.dumps({
            "recipe": RECIPE_VERSION,
            "suite": self.mirror.suite,
            "extra_suites": list(self.mirror.extra_suites),
            "kernel": [self.kernel_package, self.kernel_package_version],
            "packages": list(self.package_versions),
        }, sort_keys=True)
        return f"{self.kernel_release}-{hashlib.sha256(doc.encode()).hexdigest()[:12]}"


def resolve_spec(update_if_needed: bool = False) -> Spec:
    """The spec for this host's current apt lists (raises HostError/BuildError)."""
    mirror = hostenv.debian_mirror()
    want = [KERNEL_META_PACKAGE, *GUEST_PACKAGES]
    info = _apt_show(want)
    if KERNEL_META_PACKAGE not in info and update_if_needed and hostenv.is_root():
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q", "update"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        info = _apt_show(want)
    if KERNEL_META_PACKAGE not in info:
        raise BuildError(f"the host's apt lists do not know {KERNEL_META_PACKAGE} (run apt-get update)")
    m = re.search(r"\b(linux-image-[0-9][^\s,(]*-amd64)\s*\(=\s*([^)\s]+)\)",
                  info[KERNEL_META_PACKAGE].get("Depends", ""))
    if not m:
        raise BuildError(f"cannot find the kernel package in {KERNEL_META_PACKAGE}'s Depends")
    missing = [p for p in GUEST_PACKAGES if p not in info]
    if missing:
        raise BuildError("the host's apt lists do not know: " + " ".join(missing))
    versions = tuple((p, info[p]["Version"]) for p in GUEST_PACKAGES)
    return Spec(mirror, m.group(1), m.group(2), versions)


@dataclasses.dataclass(frozen=True)
class Image:
    path: Path

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def boot_kernel(self) -> Path:
        """What QEMU boots: the uncompressed PVH ``vmlinux`` when it can be had
        (saves the in-guest decompression, seconds under TCG), else ``vmlinuz``."""
        vmlinux = self.path / "vmlinux"
        if vmlinux.exists():
            return vmlinux
        try:
            data = extract_pvh_vmlinux(self.kernel.read_bytes())
        except OSError:
            return self.kernel
        if data is None:
            return self.kernel
        tmp = self.path / f".vmlinux-{os.getpid()}"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, vmlinux)
        except OSError:       # read-only cache: boot the compressed kernel
            tmp.unlink(missing_ok=True)
            return self.kernel
        return vmlinux

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def manifest(self) -> dict:
        with open(self.path / "manifest.json") as f:
            return json.load(f)

    def complete(self) -> bool:
        return all(p.exists() for p in (self.kernel, self.initrd, self.rootfs / "usr/bin/python3",
                                        self.path / "manifest.json"))


def cached_image(spec: Spec) -> Image | None:
    img = Image(cache_root() / spec.key)
    return img if img.complete() else None


def latest_cached_image() -> Image | None:
    """The newest complete image in the cache (used when apt lists are unavailable)."""
    root = cache_root()
    if not root.is_dir():
        return None
    imgs = [Image(p) for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()]
    imgs = [i for i in imgs if i.complete()]
    return max(imgs, key=lambda i: (i.path / "manifest.json").stat().st_mtime, default=None)


class _Log:
    def __init__(self, path: Path, echo):
        self.path = path
        self.f = open(path, "a")
        self.echo = echo
        self.t0 = time.monotonic()

    def step(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {msg}"
        self.f.write(line + "\n")
        self.f.flush()
        if self.echo:
            print(f"wsd-rxe-vm: {line}", file=self.echo, flush=True)

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        self.f.write("$ " + " ".join(cmd) + "\n")
        self.f.flush()
        r = subprocess.run(cmd, stdout=self.f, stderr=subprocess.STDOUT, **kw)
        if r.returncode != 0:
            raise BuildError(f"{cmd[0]} failed with status {r.returncode} (log: {self.path})")
        return r

    def close(self) -> None:
        self.f.close()


def _initramfs_modules(rootfs: Path, kver: str) -> list[Path]:
    r = subprocess.run([hostenv.tool("modprobe"), "-d", str(rootfs), "-S", kver, "--show-depends",
                        "-a", *INITRAMFS_MODULES], capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"modprobe --show-depends failed: {r.stderr.strip()}")
    mods: list[Path] = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "insmod":
            p = Path(parts[1])
            if p not in mods:
                mods.append(p)
    return mods


def _write_initramfs(out: Path, work: Path, rootfs: Path, kver: str) -> None:
    tree = work / "initramfs"
    for d in ("bin", "dev", "proc", "sys", "modules", "lower", "upper", "newroot"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    busybox = hostenv.static_busybox()
    if busybox is None:
        raise BuildError("no static busybox on the host (busybox-static)")
    shutil.copy2(busybox, tree / "bin" / "busybox")
    order = []
    for mod in _initramfs_modules(rootfs, kver):
        name = mod.name
        data = mod.read_bytes()
        if name.endswith(".xz"):
            import lzma
            data, name = lzma.decompress(data), name[:-3]
        elif name.endswith(".zst"):
            data = subprocess.run([hostenv.tool("zstd"), "-dc", str(mod)], capture_output=True,
                                  check=True).stdout
            name = name[:-4]
        elif name.endswith(".gz"):
            data, name = gzip.decompress(data), name[:-3]
        (tree / "modules" / name).write_bytes(data)
        order.append(name)
    (tree / "modules.order").write_text("".join(n + "\n" for n in order))
    init = tree / "init"
    init.write_text(guest.INITRAMFS_INIT)
    init.chmod(0o755)
    try:
        os.mknod(tree / "dev" / "console", 0o600 | 0o020000, os.makedev(5, 1))
    except PermissionError:
        pass  # /init re-opens the console on devtmpfs
    names = subprocess.run(["find", ".", "-print0"], cwd=tree, capture_output=True, check=True).stdout
    r = subprocess.run([hostenv.tool("cpio"), "--null", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                       cwd=tree, input=names, capture_output=True)
    if r.returncode != 0:
        raise BuildError(f"cpio failed: {r.stderr.decode(errors='replace').strip()}")
    with gzip.open(out, "wb", compresslevel=6) as f:
        f.write(r.stdout)


def prune(keep: Image) -> list[Path]:
    """Delete every cached image except ``keep`` (under the build lock)."""
    root = cache_root()
    removed = []
    with open(root / ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        for p in root.iterdir():
            if p.is_dir() and not p.name.startswith(".") and p.resolve() != keep.path.resolve():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def build(spec: Spec | None = None, force: bool = False, echo=sys.stderr) -> Image:
    """Build (or find) the image for ``spec``; returns the cached image."""
    hostenv.ensure_host_tools(install=True, log=echo or sys.stderr)
    if not hostenv.is_root():
        raise hostenv.HostError("building the image needs root (debootstrap)")
    if spec is None:
        spec = resolve_spec(update_if_needed=True)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / spec.key
    with open(root / ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        img = Image(final)
        if img.complete() and not force:
            return img
        t0 = time.monotonic()
        # Builds only happen under the lock, so any leftover work dir is from a
        # build that was killed: remove it.
        for stale in root.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = root / f".build-{spec.key}-{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        log = _Log(root / "last-build.log", echo)
        log.f.truncate(0)
        done = False
        try:
            kver = spec.kernel_release
            log.step(f"image {spec.key}: kernel {spec.kernel_package} {spec.kernel_package_version}, "
                     f"{spec.mirror.uri} {spec.mirror.suite}")
            dl = work / "dl"
            dl.mkdir()
            log.step(f"apt-get download {spec.kernel_package}")
            log.run(["apt-get", "-q", "download", f"{spec.kernel_package}={spec.kernel_package_version}"],
                    cwd=dl)
            debs = list(dl.glob("*.deb"))
            if len(debs) != 1:
                raise BuildError(f"expected one kernel .deb, got {debs}")
            kdir = work / "kernel"
            log.run(["dpkg-deb", "-x", str(debs[0]), str(kdir)])
            rootfs = work / "rootfs"
            log.step(f"debootstrap --variant=minbase {spec.mirror.suite} ({len(GUEST_PACKAGES)} packages)")
            cmd = ["debootstrap", "--variant=minbase", "--components=main",
                   "--include=" + ",".join(GUEST_PACKAGES)]
            if spec.mirror.extra_suites:
                cmd.append("--extra-suites=" + ",".join(spec.mirror.extra_suites))
            if spec.mirror.keyring:
                cmd.append("--keyring=" + spec.mirror.keyring)
            cmd += [spec.mirror.suite, str(rootfs), spec.mirror.uri]
            log.run(cmd)
            log.step("kernel modules into the root, depmod")
            src_mods = kdir / "lib" / "modules" / kver
            if not src_mods.is_dir():
                src_mods = kdir / "usr" / "lib" / "modules" / kver
            dst_mods = rootfs / "usr" / "lib" / "modules" / kver
            dst_mods.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src_mods), str(dst_mods))
            log.run([hostenv.tool("depmod"), "-b", str(rootfs), kver])
            shutil.copy2(kdir / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
            vmlinux = extract_pvh_vmlinux((work / "vmlinuz").read_bytes())
            if vmlinux is not None:
                (work / "vmlinux").write_bytes(vmlinux)
            log.step("initramfs")
            _write_initramfs(work / "initrd.img", work, rootfs, kver)
            shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
            for junk in ("kernel", "dl", "initramfs"):
                shutil.rmtree(work / junk)
            installed = subprocess.run(
                ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\n",
                 *GUEST_PACKAGES], capture_output=True, text=True).stdout
            manifest = {
                "key": spec.key,
                "recipe": RECIPE_VERSION,
                "mirror": spec.mirror.uri,
                "suite": spec.mirror.suite,
                "extra_suites": list(spec.mirror.extra_suites),
                "kernel_package": spec.kernel_package,
                "kernel_package_version": spec.kernel_package_version,
                "kernel_release": kver,
                "candidate_versions": dict(spec.package_versions),
                "installed_versions": dict(l.split("\t", 1) for l in installed.splitlines() if "\t" in l),
                "build_seconds": round(time.monotonic() - t0, 1),
                "rootfs_bytes": _dir_size(rootfs),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            if final.exists():
                old = root / f".old-{spec.key}-{os.getpid()}"
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(work, final)
            log.step(f"done: {final} ({manifest['rootfs_bytes'] / 2**20:.0f} MiB root)")
            done = True
        finally:
            if not done:      # failed or interrupted: keep debootstrap's log, drop the work dir
                dlog = work / "rootfs" / "debootstrap" / "debootstrap.log"
                if dlog.exists():
                    shutil.copy2(dlog, root / "last-debootstrap.log")
                    log.step(f"failed; debootstrap's own log: {root / 'last-debootstrap.log'}")
                shutil.rmtree(work, ignore_errors=True)
            log.close()
        return Image(final)
