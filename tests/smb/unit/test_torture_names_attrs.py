"""Behaviours behind smbtorture smb2.charset, smb2.winattr and smb2.sdread, through a raw
SMB2 client against the in-process server:

* a name with an unpaired UTF-16 surrogate is refused cleanly (OBJECT_NAME_INVALID, MS-FSA
  2.1.5.1), a complete pair is an ordinary name;
* FILE_ATTRIBUTE_READONLY on a directory is kept and returned, and blocks delete-on-close
  (MS-FSA 2.1.5.14.2, 2.1.5.14.3);
* SMB2_0_INFO_SECURITY with no OWNER/GROUP/DACL bits needs no READ_CONTROL and returns an
  empty descriptor; asking for a part without READ_CONTROL is ACCESS_DENIED (MS-FSA 2.1.5.13).
"""
from __future__ import annotations

import struct

from rawclient import RawClient
from smbunit import PASSWORD, USER

from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FileId
from wsd_smb.wire.header import Command

STATUS_OBJECT_NAME_INVALID = 0xC0000033
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_CANNOT_DELETE = 0xC0000121
FILE_READ_ATTRIBUTES, READ_CONTROL = 0x80, 0x00020000
FILE_DIRECTORY_FILE = 0x1


def _connect(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(USER, PASSWORD).status == 0
    return c, c.tree_connect("share").header.tree_id


def _create(c, tid, raw_name: bytes, *, access=0x0012019F, disposition=3, options=0x40, attrs=0x80):
    r = c.request(Command.SMB2_CREATE, w.CreateRequest(
        requested_oplock_level=0, impersonation_level=2, desired_access=access, file_attributes=attrs,
        share_access=7, create_disposition=disposition, create_options=options, name=raw_name), tree_id=tid)
    fid = FileId(*w.CreateResponse.unpack(r.raw).file_id) if r.status == 0 else None
    return r.status, fid


def _close(c, tid, fid):
    assert c.request(Command.SMB2_CLOSE, w.CloseRequest(flags=0, file_id=fid), tree_id=tid).status == 0


def _query(c, tid, fid, info_type, klass, extra=0):
    r = c.request(Command.SMB2_QUERY_INFO, w.QueryInfoRequest(
        info_type=info_type, file_info_class=klass, output_buffer_length=4096, additional_information=extra,
        file_id=fid), tree_id=tid)
    return r.status, (bytes(w.QueryInfoResponse.unpack(r.raw).output_buffer) if r.status == 0 else None)


def _set_basic(c, tid, fid, attributes):
    buf = struct.pack("<qqqqII", 0, 0, 0, 0, attributes, 0)
    return c.request(Command.SMB2_SET_INFO, w.SetInfoRequest(info_type=1, file_info_class=4, buffer=buf,
                                                             file_id=fid), tree_id=tid).status


def test_unpaired_surrogate_name_is_invalid_and_a_pair_is_a_name(smbd, tmp_path):
    c, tid = _connect(smbd)
    for units in ([0xD800], [0xDC00], [0x61, 0xD800]):
        raw = b"".join(struct.pack("<H", u) for u in units)
        assert _create(c, tid, raw, disposition=2)[0] == STATUS_OBJECT_NAME_INVALID
    status, fid = _create(c, tid, struct.pack("<HH", 0xD800, 0xDC00), disposition=2)
    assert status == 0
    _close(c, tid, fid)
    assert [p.name for p in (tmp_path / "share").iterdir() if p.name.startswith("\U00010000")] == ["\U00010000"]
    c.close()


def test_directory_readonly_attribute_is_kept_and_blocks_delete(smbd, tmp_path):
    c, tid = _connect(smbd)
    status, fid = _create(c, tid, "rodir".encode("utf-16-le"), access=0x0013019F, disposition=2,
                          options=FILE_DIRECTORY_FILE, attrs=0x10)
    assert status == 0
    assert _set_basic(c, tid, fid, 0x1 | 0x2) == 0           # READONLY | HIDDEN
    status, basic = _query(c, tid, fid, 1, 4)
    assert status == 0 and struct.unpack_from("<I", basic, 32)[0] == 0x10 | 0x1 | 0x2
    # FileDispositionInformation: READONLY stops it; the directory itself stays writable on disk
    r = c.request(Command.SMB2_SET_INFO, w.SetInfoRequest(info_type=1, file_info_class=13, buffer=b"\x01",
                                                          file_id=fid), tree_id=tid)
    assert r.status == STATUS_CANNOT_DELETE
    _close(c, tid, fid)
    assert _create(c, tid, "rodir".encode("utf-16-le"), access=0x00110000, disposition=1,
                   options=FILE_DIRECTORY_FILE | 0x1000)[0] == STATUS_CANNOT_DELETE
    status, inner = _create(c, tid, "rodir\\inner.txt".encode("utf-16-le"), disposition=2)
    assert status == 0
    _close(c, tid, inner)
    status, fid = _create(c, tid, "rodir".encode("utf-16-le"), disposition=1, options=FILE_DIRECTORY_FILE)
    assert _set_basic(c, tid, fid, 0x80) == 0                  # NORMAL clears READONLY
    status, basic = _query(c, tid, fid, 1, 4)
    assert struct.unpack_from("<I", basic, 32)[0] == 0x10
    _close(c, tid, fid)
    c.close()


def test_security_query_without_read_control(smbd, tmp_path):
    c, tid = _connect(smbd)
    status, fid = _create(c, tid, "sdread.txt".encode("utf-16-le"), disposition=5)
    assert status == 0
    _close(c, tid, fid)
    status, fid = _create(c, tid, "sdread.txt".encode("utf-16-le"), access=FILE_READ_ATTRIBUTES, disposition=1)
    assert status == 0
    for bit in (1, 2, 4):
        assert _query(c, tid, fid, 3, 0, bit) == (STATUS_ACCESS_DENIED, None)
    status, sd = _query(c, tid, fid, 3, 0, 0)
    assert status == 0
    rev, _, control, owner, group, sacl, dacl = struct.unpack_from("<BBHIIII", sd)
    assert rev == 1 and control & 0x8000 and (owner, group, sacl, dacl) == (0, 0, 0, 0)
    _close(c, tid, fid)
    status, fid = _create(c, tid, "sdread.txt".encode("utf-16-le"), access=FILE_READ_ATTRIBUTES | READ_CONTROL,
                          disposition=1)
    status, sd = _query(c, tid, fid, 3, 0, 1)
    assert status == 0 and struct.unpack_from("<I", sd, 4)[0] != 0   # the owner is there
    _close(c, tid, fid)
    c.close()


def test_directory_created_readonly_keeps_the_attribute(smbd, tmp_path):
    c, tid = _connect(smbd)
    status, fid = _create(c, tid, "rodir2".encode("utf-16-le"), disposition=2, options=FILE_DIRECTORY_FILE,
                          attrs=0x10 | 0x1)
    assert status == 0
    status, basic = _query(c, tid, fid, 1, 4)
    assert struct.unpack_from("<I", basic, 32)[0] == 0x10 | 0x1
    _close(c, tid, fid)
    # a READONLY directory is only a flag: creating inside it works (NTFS does the same)
    status, inner = _create(c, tid, "rodir2\\f.txt".encode("utf-16-le"), disposition=2)
    assert status == 0
    _close(c, tid, inner)
    c.close()
