"""FSCTL_CREATE_OR_GET_OBJECT_ID / FSCTL_GET_OBJECT_ID (MS-FSA 2.1.5.10.1, 2.1.5.10.13;
MS-FSCC 2.3.1, 2.3.2, 2.3.26) through SMB2 IOCTL."""
from __future__ import annotations

from rawclient import RawClient
from smbunit import PASSWORD, USER

from wsd_smb.store import fscc
from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import Command

CREATE_OR_GET, GET = 0x000900C0, 0x0009009C
STATUS_OBJECTID_NOT_FOUND, STATUS_INVALID_PARAMETER = 0xC00002F0, 0xC000000D


def _open(c, tid, name):
    r = c.request(Command.SMB2_CREATE, w.CreateRequest(
        requested_oplock_level=0, impersonation_level=2, desired_access=0x0012019F, file_attributes=0x80,
        share_access=7, create_disposition=3, create_options=0x40, name=name.encode("utf-16-le")), tree_id=tid)
    assert r.status == 0
    return FileId(*w.CreateResponse.unpack(r.raw).file_id)


def _ioctl(c, tid, fid, code, max_out=64):
    r = c.request(Command.SMB2_IOCTL, w.IoctlRequest(ctl_code=code, file_id=fid, input=b"", output=b"",
                                                     max_input_response=0, max_output_response=max_out,
                                                     flags=1), tree_id=tid)
    return r.status, (bytes(w.IoctlResponse.unpack(r.raw).output) if r.status == 0 else None)


def test_object_ids_are_created_once_and_kept(smbd, tmp_path):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    tid = c.tree_connect("share").header.tree_id
    fid = _open(c, tid, "oid.txt")
    assert _ioctl(c, tid, fid, GET) == (STATUS_OBJECTID_NOT_FOUND, None)   # none yet
    assert _ioctl(c, tid, fid, CREATE_OR_GET, max_out=63)[0] == STATUS_INVALID_PARAMETER
    status, out = _ioctl(c, tid, fid, CREATE_OR_GET)
    assert status == 0 and len(out) == 64
    b = fscc.FileObjectIdBuffer.unpack(out, 0)
    assert b.object_id != b"\0" * 16 and b.birth_object_id == b.object_id and b.domain_id == b"\0" * 16
    # the same ID again through GET and from a second open of the file; another file gets its own
    assert _ioctl(c, tid, fid, GET) == (0, out)
    fid2 = _open(c, tid, "other.txt")
    status, out2 = _ioctl(c, tid, fid2, CREATE_OR_GET)
    assert status == 0 and out2[:16] != out[:16] and out2[16:32] == out[16:32]  # same volume
    assert _ioctl(c, tid, _open(c, tid, "oid.txt"), GET) == (0, out)
    c.close()
