"""impacket's SMBConnection against the server under test.

``preferredDialect=None`` makes impacket open with an SMB1 NEGOTIATE that
lists "SMB 2.002"/"SMB 2.???", so the server must answer the multi-protocol
negotiate with an SMB2 NEGOTIATE response (MS-SMB2 3.3.5.3.1); the other
cases force one SMB2/3 dialect.
"""
from __future__ import annotations

import hashlib
import io
import os

import pytest

pytest.importorskip("impacket")
from impacket import smb3structs  # noqa: E402
from impacket.smbconnection import SessionError, SMBConnection  # noqa: E402

pytestmark = pytest.mark.interop

DIALECTS = {
    "multiprotocol": None,
    "2.0.2": smb3structs.SMB2_DIALECT_002,
    "2.1": smb3structs.SMB2_DIALECT_21,
    "3.0": smb3structs.SMB2_DIALECT_30,
    "3.1.1": smb3structs.SMB2_DIALECT_311,
}
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_LOGON_FAILURE = 0xC000006D


def _connect(srv, dialect) -> SMBConnection:
    conn = SMBConnection(srv.host, srv.host, sess_port=srv.port, timeout=30, preferredDialect=dialect)
    conn.login(srv.user, srv.password)
    return conn


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
def test_impacket_file_cycle(smb_server, dialect):
    srv = smb_server
    conn = _connect(srv, dialect)
    try:
        if dialect is not None:
            assert conn.getDialect() == dialect
        else:
            assert conn.getDialect() >= smb3structs.SMB2_DIALECT_002
        assert not conn.isGuestSession()
        d = f"imp_{dialect or 0:x}"
        data = os.urandom(2 * 1024 * 1024 + 999)
        conn.createDirectory(srv.share, d)
        assert (srv.share_path / d).is_dir()

        # putFile / getFile (the client chunks by the negotiated max sizes)
        conn.putFile(srv.share, f"{d}\\put.bin", io.BytesIO(data).read)
        assert hashlib.sha256((srv.share_path / d / "put.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
        got = io.BytesIO()
        conn.getFile(srv.share, f"{d}\\put.bin", got.write)
        assert got.getvalue() == data

        # listPath
        names = sorted(e.get_longname() for e in conn.listPath(srv.share, f"{d}\\*"))
        assert names == [".", "..", "put.bin"]
        entry = [e for e in conn.listPath(srv.share, f"{d}\\put.bin")][0]
        assert entry.get_filesize() == len(data) and not entry.is_directory()

        # createFile/writeFile/readFile/closeFile on a tree we connect ourselves
        tid = conn.connectTree(srv.share)
        fid = conn.createFile(tid, f"{d}\\raw.bin")
        small = b"0123456789abcdef" * 4096
        written = 0
        while written < len(small):
            written += conn.writeFile(tid, fid, small[written:written + 60000], written)
        assert written == len(small)
        back = conn.readFile(tid, fid, 0, len(small), singleCall=False)
        assert back == small
        assert conn.readFile(tid, fid, 1000, 16) == small[1000:1016]
        conn.closeFile(tid, fid)
        assert (srv.share_path / d / "raw.bin").read_bytes() == small

        # rename, delete, rmdir
        conn.rename(srv.share, f"{d}\\raw.bin", f"{d}\\renamed.bin")
        assert not (srv.share_path / d / "raw.bin").exists() and (srv.share_path / d / "renamed.bin").exists()
        conn.deleteFile(srv.share, f"{d}\\renamed.bin")
        conn.deleteFile(srv.share, f"{d}\\put.bin")
        with pytest.raises(SessionError) as ei:
            conn.deleteFile(srv.share, f"{d}\\put.bin")
        assert ei.value.getErrorCode() == STATUS_OBJECT_NAME_NOT_FOUND
        conn.deleteDirectory(srv.share, d)
        assert not (srv.share_path / d).exists()
        conn.disconnectTree(tid)
        conn.logoff()
    finally:
        conn.close()


def test_impacket_list_shares(smb_server):
    conn = _connect(smb_server, smb3structs.SMB2_DIALECT_21)
    try:
        names = [s["shi1_netname"][:-1] for s in conn.listShares()]
        assert smb_server.share in names and "IPC$" in names
    finally:
        conn.close()


def test_impacket_bad_password(smb_server):
    conn = SMBConnection(smb_server.host, smb_server.host, sess_port=smb_server.port, timeout=30)
    try:
        with pytest.raises(SessionError) as ei:
            conn.login(smb_server.user, "bad-" + smb_server.password)
        assert ei.value.getErrorCode() == STATUS_LOGON_FAILURE
    finally:
        conn.close()
