"""Security information in the object store (MS-FSA 2.1.5.13 / 2.1.5.17 for
SMB2_0_INFO_SECURITY): the descriptor a file has (stored, or the default) and setting parts of
it, with the owner rule.  The SACL is read and written through an open that was granted
ACCESS_SYSTEM_SECURITY (which takes SeSecurityPrivilege, store/security.py) and is kept
with the rest of the descriptor in ``user.wsd.sd``."""
from __future__ import annotations

import errno
import logging
import os

from .attrs import fd_path, xattr_call
from .constants import (
    ACCESS_SYSTEM_SECURITY,
    DACL_SECURITY_INFORMATION,
    GROUP_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION,
    READ_CONTROL,
    SACL_SECURITY_INFORMATION,
    WRITE_DAC,
    WRITE_OWNER,
)
from .errors import (
    STATUS_ACCESS_DENIED,
    STATUS_FILE_CLOSED,
    fail,
    from_oserror,
)
from . import security as sec
from .security import (
    XATTR_OWNER,
    XATTR_SD,
    Descriptor,
    default_descriptor,
)

from .objects import Open, STATUS_NOT_SUPPORTED_

log = logging.getLogger("wsd_smb.store")

#: MS-DTYP 2.4.7 LABEL_SECURITY_INFORMATION
LABEL_SECURITY_INFORMATION = 0x00000010
_READ_CONTROL_PARTS = (OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION
                       | LABEL_SECURITY_INFORMATION)


class SecurityInfoMixin:
    """Security information of the object store (mixed into :class:`~.objectstore.ObjectStore`)."""

    # ------------------------------------------------------------------ security
    def get_security(self, o: Open, info: int) -> bytes:
        """The descriptor parts named by *info* (MS-SMB2 3.3.5.20.3)."""
        if info & SACL_SECURITY_INFORMATION and not o.granted_access & ACCESS_SYSTEM_SECURITY:
            raise fail(STATUS_ACCESS_DENIED, "SACL needs ACCESS_SYSTEM_SECURITY")
        # MS-FSA 2.1.5.13: READ_CONTROL is needed for the OWNER/GROUP/DACL/LABEL parts only;
        # asking for none of them succeeds without it, with an empty descriptor (smb2.sdread)
        if info & _READ_CONTROL_PARTS and not o.granted_access & READ_CONTROL:
            raise fail(STATUS_ACCESS_DENIED, "no READ_CONTROL")
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                return self._descriptor(o).pack(info)
            except OSError as e:
                raise from_oserror(e) from None

    def _descriptor(self, o: Open) -> Descriptor:
        try:
            raw = os.getxattr(fd_path(o.fd), XATTR_SD)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
            st = os.fstat(o.fd)
            sd = default_descriptor(st.st_uid, st.st_gid)
            try:  # created over SMB: owned by the user who created it
                owner = xattr_call(os.getxattr, o.fd, XATTR_OWNER)
            except OSError as e2:
                if e2.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    raise
            else:
                if len(owner) >= 8 and len(owner) == 8 + 4 * owner[1] and owner[0] == 1:
                    sd.owner = bytes(owner)
            return sd
        return Descriptor.parse(raw)

    def set_security(self, o: Open, info: int, buf: bytes) -> None:
        """SMB2_0_INFO_SECURITY set (MS-SMB2 3.3.5.21.3, MS-FSA 2.1.5.17): stored in
        ``user.wsd.sd``; CREATE checks later opens against it.  The SACL needs
        ACCESS_SYSTEM_SECURITY on the open (else STATUS_ACCESS_DENIED)."""
        if info & SACL_SECURITY_INFORMATION and not o.granted_access & ACCESS_SYSTEM_SECURITY:
            raise fail(STATUS_ACCESS_DENIED, "SACL needs ACCESS_SYSTEM_SECURITY")
        if info & (OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION) and not o.granted_access & WRITE_OWNER:
            raise fail(STATUS_ACCESS_DENIED, "no WRITE_OWNER")
        if info & DACL_SECURITY_INFORMATION and not o.granted_access & WRITE_DAC:
            raise fail(STATUS_ACCESS_DENIED, "no WRITE_DAC")
        if o.share.read_only:
            raise fail(STATUS_ACCESS_DENIED, "read-only share")
        new = Descriptor.parse(buf)
        if info & OWNER_SECURITY_INFORMATION and o.token is not None:
            sec.check_owner(o.token, new.owner)
        with o.io_lock:
            if o.closed:
                raise fail(STATUS_FILE_CLOSED)
            try:
                merged = self._descriptor(o).merge(new, info)
                self._write_sd(o.fd, merged)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise fail(STATUS_NOT_SUPPORTED_, "no xattrs to keep the descriptor in") from None
                raise from_oserror(e) from None
