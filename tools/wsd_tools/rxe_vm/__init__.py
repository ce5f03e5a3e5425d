"""softRoCE (rdma_rxe) VM harness.

The host kernel of a typical CI machine has no RDMA support, so real verbs
tests run inside a small QEMU guest: Debian's stock kernel (extracted from its
package, never installed on the host), a debootstrap'd Debian root file system
shared read-only over 9p, and the project shared read-write over 9p at the
same path as on the host.  The guest has no network card; ``rdma_rxe`` is bound
to a guest-only dummy interface (192.0.2.1/24), so no packet can leave it.

Modules:

- :mod:`.hostenv`  -- what the host offers (tools, apt mirror, root) and why it can't.
- :mod:`.image`    -- the cache key, and building/caching the image.
- :mod:`.guest`    -- the scripts that run inside the guest (initramfs ``/init``, stage 2).
- :mod:`.vm`       -- booting the guest, running one command, collecting its exit code.
- :mod:`.cli`      -- the ``wsd-rxe-vm`` command.

See docs/rdma-vm.md.
"""

# Addresses and names inside the guest (a documentation range on an isolated
# dummy interface: RFC 5737).
GUEST_NETDEV = "dummy0"
GUEST_RDMA_DEV = "rxe0"
GUEST_ADDR = "192.0.2.1"
GUEST_PREFIX = 24
GUEST_GID_INDEX = 1

# Exit codes of the CLI (besides the guest command's own exit status, which
# `run`, `test` and `perftest` pass through unchanged).
EXIT_OK = 0
EXIT_NOT_CACHED = 1        # status: the host can build the image, it is just not built yet
EXIT_HOST_UNSUPPORTED = 3  # build/status: this host cannot build or boot the image
EXIT_BUILD_FAILED = 4      # build: the build itself failed (details on stderr)
EXIT_TIMEOUT = 124         # run/test/perftest: the hard timeout killed the VM
EXIT_HARNESS = 125         # run/test/perftest: VM did not boot, rxe set-up failed, no exit marker
