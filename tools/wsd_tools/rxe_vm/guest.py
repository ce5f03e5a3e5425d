"""The scripts that run inside the guest.

Boot sequence:

1. The kernel runs ``/init`` from the initramfs (busybox only).  It loads the
   9p/virtio/overlay modules listed in ``/modules.order``, mounts the root file
   system tag ``wsdroot`` read-only, puts a tmpfs overlay on top of it (so the
   guest can write anywhere; nothing reaches the host image), mounts the
   per-run share ``wsdrun`` at ``/wsdrun`` and switch_roots into
   ``/wsdrun/stage2.sh``.
2. Stage 2 (Debian's ``/bin/sh``, PID 1) mounts /proc, /sys, /dev, tmpfs'es,
   mounts the project (tag ``wsdproj``) at the host's path, sets up rxe on a
   dummy interface, runs ``/wsdrun/cmd.sh`` with its output on the serial
   console between two markers, writes the exit code to ``/wsdrun/rc`` and
   powers off.

Stage 2 is written into the run directory for every boot, so editing it here
takes effect without rebuilding the cached image.
"""

from __future__ import annotations

from . import GUEST_ADDR, GUEST_NETDEV, GUEST_PREFIX, GUEST_RDMA_DEV

MARK_BEGIN = "@@WSD-RXE-VM:BEGIN@@"
MARK_EXIT = "@@WSD-RXE-VM:EXIT="      # followed by the decimal status and "@@"
MARK_SETUP_FAILED = "@@WSD-RXE-VM:SETUP-FAILED@@"

TAG_ROOT = "wsdroot"
TAG_PROJECT = "wsdproj"
TAG_RUN = "wsdrun"
MSIZE = 262144

INITRAMFS_INIT = f"""#!/bin/busybox sh
# wsd rxe VM: initramfs stage (busybox).  See tools/wsd_tools/rxe_vm/guest.py.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
fail() {{ echo "{MARK_SETUP_FAILED} initramfs: $*"; sleep 1; echo o > /proc/sysrq-trigger; sleep 10; }}
while read -r m; do
    [ -n "$m" ] && insmod "/modules/$m" 2>/dev/null
done < /modules.order
mkdir -p /lower /upper /newroot
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize={MSIZE},cache=loose {TAG_ROOT} /lower || fail "mount {TAG_ROOT}"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
if ! mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot; then
    fail "overlay mount"
fi
mkdir -p /newroot/wsdrun
mount -t 9p -o trans=virtio,version=9p2000.L,msize={MSIZE} {TAG_RUN} /newroot/wsdrun || fail "mount {TAG_RUN}"
umount /proc
exec switch_root /newroot /bin/sh /wsdrun/stage2.sh
"""

STAGE2 = f"""#!/bin/sh
# wsd rxe VM: stage 2 (PID 1 in the Debian root).  See tools/wsd_tools/rxe_vm/guest.py.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
poweroff_now() {{ sync; echo o > /proc/sysrq-trigger; sleep 30; }}
fail() {{ echo "{MARK_SETUP_FAILED} $*"; poweroff_now; }}
echo "wsd-rxe-vm: stage 2 at $(cut -d' ' -f1 /proc/uptime) s guest uptime"
. /wsdrun/config
hostname wsd-rxe-vm 2>/dev/null
mkdir -p "$WSD_GUEST_PROJECT"
mount -t 9p -o trans=virtio,version=9p2000.L,msize={MSIZE}${{WSD_PROJECT_CACHE:+,cache=$WSD_PROJECT_CACHE}} \\
    {TAG_PROJECT} "$WSD_GUEST_PROJECT" \\
    || fail "mount project at $WSD_GUEST_PROJECT"
ip link set lo up
setup_rxe() {{
    echo "options dummy numdummies=0" > /etc/modprobe.d/wsd-rxe-vm.conf &&
    modprobe -a dummy rdma_rxe ib_uverbs rdma_ucm &&
    ip link add {GUEST_NETDEV} type dummy &&
    ip addr add {GUEST_ADDR}/{GUEST_PREFIX} dev {GUEST_NETDEV} &&
    ip link set {GUEST_NETDEV} up &&
    rdma link add {GUEST_RDMA_DEV} type rxe netdev {GUEST_NETDEV}
}}
setup_rxe > /wsdrun/setup.log 2>&1 || fail "rxe set-up (see setup.log): $(tail -n 3 /wsdrun/setup.log)"
n=0
while [ ! -e /dev/infiniband/uverbs0 ] || [ ! -e /dev/infiniband/rdma_cm ]; do
    n=$((n+1)); [ $n -gt 100 ] && fail "no /dev/infiniband/uverbs0 or rdma_cm"
    sleep 0.1
done
echo "wsd-rxe-vm: rxe0 up at $(cut -d' ' -f1 /proc/uptime) s guest uptime"
if [ "$WSD_MODE" = shell ]; then
    echo "wsd-rxe-vm: interactive shell; 'exit' powers off"
    . /wsdrun/cmd.sh
    cd "$WSD_CWD" 2>/dev/null || cd "$WSD_GUEST_PROJECT"
    setsid -c /bin/bash -i <>/dev/ttyS0 >&0 2>&1
    poweroff_now
fi
echo "{MARK_BEGIN}"
cd "$WSD_CWD" 2>/dev/null || cd "$WSD_GUEST_PROJECT"
/bin/sh /wsdrun/cmd.sh </dev/null 2>&1
rc=$?
echo "$rc" > /wsdrun/rc
echo "{MARK_EXIT}$rc@@"
poweroff_now
"""
