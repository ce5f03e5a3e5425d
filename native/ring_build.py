"""cffi build script for the native SPSC ring (API / out-of-line mode).

Used by setup.py (``cffi_modules=["native/ring_build.py:ffibuilder"]``), so
``pip install .`` and ``pip install -e .`` compile ``wsd_ring._ring``.
Run directly (``python native/ring_build.py``) to check for a C compiler.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
typedef struct { ...; } wsd_ring;

#define WSD_RING_MAGIC ...
#define WSD_RING_VERSION ...
#define WSD_RING_HDR_SIZE ...
#define WSD_RING_REC_HDR ...
#define WSD_RING_PAD_LEN ...
#define WSD_RING_FILL_LEN ...
#define WSD_RING_MIN_CAP ...

uint64_t wsd_ring_map_size(uint64_t capacity);
int wsd_ring_format(void *mem, uint64_t memsize, uint64_t capacity);
int wsd_ring_open(wsd_ring *r, void *mem, uint64_t memsize);
void wsd_ring_set_fds(wsd_ring *r, int wake_consumer_fd, int wake_producer_fd);
void wsd_ring_forked(wsd_ring *r);
void wsd_ring_close(wsd_ring *r);
uint32_t wsd_ring_max_msg(const wsd_ring *r);

int64_t wsd_ring_reserve(wsd_ring *r, uint32_t n);
int wsd_ring_commit(wsd_ring *r, uint32_t nbytes);
void wsd_ring_cancel(wsd_ring *r);
int wsd_ring_reserve_batch(wsd_ring *r, const uint32_t *sizes, uint32_t count, uint64_t *offs);
int wsd_ring_commit_batch(wsd_ring *r, uint32_t k);
int64_t wsd_ring_post(wsd_ring *r, uint32_t n);
int wsd_ring_commit_posted(wsd_ring *r, const uint32_t *lens, uint32_t k);
uint32_t wsd_ring_posted(const wsd_ring *r);
int wsd_ring_push(wsd_ring *r, const char *data, uint32_t n);
int wsd_ring_push_packed(wsd_ring *r, const char *data, const uint32_t *lens, uint32_t count);
int wsd_ring_push_iov(wsd_ring *r, char **bufs, const uint32_t *lens, uint32_t count);

int wsd_ring_peek(wsd_ring *r, uint32_t max_n, uint64_t *offs, uint32_t *lens);
int wsd_ring_release(wsd_ring *r, uint32_t n);
int wsd_ring_pop_packed(wsd_ring *r, char *out, uint64_t outcap, uint32_t *lens, uint32_t max_n);
int64_t wsd_ring_pop_one(wsd_ring *r, char *out, uint32_t outcap, uint64_t *off);

int wsd_ring_readable(wsd_ring *r);
int wsd_ring_writable(wsd_ring *r, uint32_t n);
int wsd_ring_spin_readable(wsd_ring *r, uint32_t spins);
int wsd_ring_spin_writable(wsd_ring *r, uint32_t n, uint32_t spins);
int wsd_ring_arm_readable(wsd_ring *r);
int wsd_ring_arm_writable(wsd_ring *r, uint32_t n);
void wsd_ring_disarm_readable(wsd_ring *r);
void wsd_ring_disarm_writable(wsd_ring *r);

uint64_t wsd_ring_head(const wsd_ring *r);
uint64_t wsd_ring_tail(const wsd_ring *r);
int32_t wsd_ring_producer_pid(const wsd_ring *r);
int32_t wsd_ring_consumer_pid(const wsd_ring *r);
int wsd_ring_producer_closed(const wsd_ring *r);
int wsd_ring_consumer_closed(const wsd_ring *r);
int wsd_ring_claim(wsd_ring *r, int role);
"""

# ring.c takes `const void *` / `void *`; the cdef above says `char *` so that
# cffi passes a bytes object's buffer without a copy. Same ABI.
SOURCE = '#include "ring.h"\n'

BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist_egg"}


def _rel(path: str) -> str:
    """setuptools wants source paths relative to the setup.py directory."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def find_c_compiler() -> str | None:
    """Return the C compiler command that setuptools will use, if it exists."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    argv = shlex.split(cc)
    if argv and shutil.which(argv[0]):
        return argv[0]
    return None


def check_c_compiler() -> None:
    if find_c_compiler() is None:
        cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
        raise SystemExit(
            "wsd: building the native ring (native/ring.c -> wsd_ring._ring) needs a C compiler, "
            f"and {cc.split()[0]!r} was not found on PATH.\n"
            "Install one (Debian/Ubuntu: apt-get install gcc libc6-dev; Fedora: dnf install gcc) "
            "or point CC at it, then run the install again."
        )


ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "wsd_ring._ring",
    SOURCE,
    sources=[_rel(os.path.join(HERE, "ring.c"))],
    include_dirs=[_rel(HERE)],
    depends=[_rel(os.path.join(HERE, "ring.h"))],
    extra_compile_args=["-O2", "-std=c11"],
)

# setup.py imports this module for every command (even egg_info, which needs
# no compiler); check before any command that compiles.
if __name__ == "__main__" or BUILD_COMMANDS.intersection(sys.argv[1:]):
    check_c_compiler()

if __name__ == "__main__":
    print(f"C compiler: {find_c_compiler()}; build with `pip install -e .` from the project root.")
