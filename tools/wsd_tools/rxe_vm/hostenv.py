"""What the host offers for building and booting the rxe VM, and why it can't.

The Debian mirror and suite come from the host's own apt configuration
(deb822 ``*.sources`` files or one-line ``*.list`` files), never from a
hard-coded host name.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import platform
import shutil
import subprocess
import sys

# Host tool -> Debian package that provides it.
HOST_TOOLS: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "depmod": "kmod",
    "modprobe": "kmod",
    "zstd": "zstd",
}
HOST_PACKAGES = sorted(set(HOST_TOOLS.values()))

# A statically linked busybox (the initramfs has no libc).
STATIC_BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")

APT_SOURCES_LIST = "/etc/apt/sources.list"
APT_SOURCES_DIR = "/etc/apt/sources.list.d"


class HostError(Exception):
    """The host cannot build or boot the image; the message says why."""


@dataclasses.dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def _which(tool: str) -> str | None:
    path = shutil.which(tool)
    if path:
        return path
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        p = os.path.join(d, tool)
        if os.access(p, os.X_OK):
            return p
    return None


def tool(name: str) -> str:
    path = _which(name)
    if path is None:
        raise HostError(f"{name} not found (Debian package {HOST_TOOLS.get(name, name)})")
    return path


def missing_tools() -> list[str]:
    return [t for t in HOST_TOOLS if _which(t) is None]


def is_root() -> bool:
    return os.geteuid() == 0


def static_busybox() -> str | None:
    for p in STATIC_BUSYBOX_PATHS:
        if not os.path.exists(p):
            continue
        with open(p, "rb") as f:
            head = f.read(4096)
        # A dynamically linked ELF has a PT_INTERP naming the loader.
        if head[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in head and b"ld-linux" not in head:
            return p
    return None


def install_host_packages(packages: list[str], log=sys.stderr) -> None:
    """apt-get install the given packages (waits for a concurrent dpkg lock)."""
    if not packages:
        return
    if not is_root():
        raise HostError(f"missing host packages {' '.join(packages)} and not root to install them")
    if _which("apt-get") is None:
        raise HostError(f"missing host packages {' '.join(packages)} and no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"wsd-rxe-vm: installing host packages: {' '.join(packages)}", file=log, flush=True)
    base = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q", "-y"]
    cmd = base + ["install", "--no-install-recommends", *packages]
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        # Stale package lists are the usual cause: refresh once and retry.
        subprocess.run(base + ["update"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise HostError(f"apt-get install {' '.join(packages)} failed: {r.stderr.strip()[-400:]}")


def ensure_host_tools(install: bool = True, log=sys.stderr) -> None:
    missing = missing_tools()
    if missing and install:
        install_host_packages(sorted({HOST_TOOLS[t] for t in missing}), log=log)
        missing = missing_tools()
    if missing:
        raise HostError("missing host tools: " + ", ".join(f"{t} ({HOST_TOOLS[t]})" for t in missing))
    if static_busybox() is None:
        raise HostError("no statically linked busybox (Debian package busybox-static)")


# --- apt configuration -------------------------------------------------------

def _parse_deb822(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
            continue
        if raw[0] in " \t" and key is not None:
            cur[key] += "\n" + raw.strip()
            continue
        if ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def _sources_from_deb822(text: str) -> list[AptSource]:
    out = []
    for st in _parse_deb822(text):
        if "deb" not in st.get("types", "").split():
            continue
        if st.get("enabled", "yes").lower() == "no":
            continue
        signed = st.get("signed-by") or None
        if signed and "\n" in signed:  # an inline key, not a path
            signed = None
        for uri in st.get("uris", "").split():
            out.append(AptSource(uri.rstrip("/"), tuple(st.get("suites", "").split()),
                                 tuple(st.get("components", "").split()), signed))
    return out


def _sources_from_one_line(text: str) -> list[AptSource]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        parts = line.split()[1:]
        signed = None
        if parts and parts[0].startswith("["):
            opts = []
            while parts:
                p = parts.pop(0)
                opts.append(p)
                if p.endswith("]"):
                    break
            for o in " ".join(opts).strip("[]").split():
                if o.startswith("signed-by="):
                    signed = o.split("=", 1)[1]
        if len(parts) < 2:
            continue
        out.append(AptSource(parts[0].rstrip("/"), (parts[1],), tuple(parts[2:]), signed))
    return out


def apt_sources() -> list[AptSource]:
    out: list[AptSource] = []
    if os.path.exists(APT_SOURCES_LIST):
        with open(APT_SOURCES_LIST) as f:
            out += _sources_from_one_line(f.read())
    for path in sorted(glob.glob(os.path.join(APT_SOURCES_DIR, "*.list"))):
        with open(path) as f:
            out += _sources_from_one_line(f.read())
    for path in sorted(glob.glob(os.path.join(APT_SOURCES_DIR, "*.sources"))):
        with open(path) as f:
            out += _sources_from_deb822(f.read())
    return out


def os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    k, sep, v = line.strip().partition("=")
                    if sep:
                        info[k] = v.strip('"')
            break
    return info


@dataclasses.dataclass(frozen=True)
class Mirror:
    uri: str
    suite: str
    extra_suites: tuple[str, ...]
    keyring: str | None


def debian_mirror() -> Mirror:
    """The host's Debian mirror for its release (main component)."""
    rel = os_release()
    if rel.get("ID") != "debian":
        raise HostError(f"host is not Debian (os-release ID={rel.get('ID')!r})")
    codename = rel.get("VERSION_CODENAME")
    for src in apt_sources():
        if "main" not in src.components or "security" in src.uri:
            continue
        suites = [s for s in src.suites if "/" not in s]
        if codename and codename in suites:
            suite = codename
        else:
            base = [s for s in suites if "-" not in s]
            if not base:
                continue
            suite = base[0]
        extra = tuple(s for s in suites if s.startswith(suite + "-") and s.endswith("-updates"))
        keyring = src.signed_by if src.signed_by and os.path.exists(src.signed_by) else None
        return Mirror(src.uri, suite, extra, keyring)
    raise HostError("no Debian 'deb ... main' source in the host's apt configuration")


def host_reasons(check_tools: bool = True) -> list[str]:
    """Why this host cannot build/boot the image (empty: it can)."""
    reasons = []
    if platform.machine() != "x86_64":
        reasons.append(f"host is {platform.machine()}, the harness needs x86_64")
    if _which("apt-get") is None or _which("dpkg") is None:
        reasons.append("no apt-get/dpkg (the harness needs a Debian host)")
    else:
        try:
            debian_mirror()
        except HostError as e:
            reasons.append(str(e))
    if check_tools:
        missing = missing_tools()
        if missing and not is_root():
            reasons.append("missing host tools and not root to install them: " + ", ".join(missing))
    if not is_root():
        reasons.append("not root (debootstrap needs root)")
    return reasons
