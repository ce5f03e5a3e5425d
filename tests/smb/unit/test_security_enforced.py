"""Stored security descriptors are enforced at CREATE (MS-SMB2 3.3.5.9, MS-FSA 2.1.5.1.2.1,
MS-DTYP 2.5.3): a real wsd-smbd driven by smbprotocol's low-level API.  Descriptors are
set with SET_INFO (SMB2_0_INFO_SECURITY) or the SecD create context and read back with
QUERY_INFO; the SIDs in them come from what the server reports (the owner of a directory
the user just created), as smbtorture does."""
from __future__ import annotations

import struct

import pytest
from secdesc import ace, dacl_sd, parse_sd
from smbpclient import FILE_ALL, SmbpClient

from smbprotocol.create_contexts import CreateContextName, SMB2CreateContextRequest
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import CreateDisposition, CreateOptions

STATUS_ACCESS_DENIED = 0xC0000022
READ = 0x00120089  # FILE_GENERIC_READ
LIST, ADD_FILE, ADD_SUBDIR, WRITE_ATTRIBUTES, DELETE_CHILD = 0x1, 0x2, 0x4, 0x100, 0x40
DELETE, READ_CONTROL, WRITE_DAC, MAXIMUM_ALLOWED = 0x10000, 0x20000, 0x40000, 0x02000000
GENERIC_ALL = 0x10000000
OI, CI, IO, INH = 0x01, 0x02, 0x08, 0x10
OWNER, DACL = 0x1, 0x4
DIR = CreateOptions.FILE_DIRECTORY_FILE
DOC = CreateOptions.FILE_DELETE_ON_CLOSE
EVERYONE = bytes([1, 1, 0, 0, 0, 0, 0, 1]) + struct.pack("<I", 0)
CREATOR_OWNER = bytes([1, 1, 0, 0, 0, 0, 0, 3]) + struct.pack("<I", 0)


AUTO = 0x0500  # SE_DACL_AUTO_INHERITED | SE_DACL_AUTO_INHERIT_REQ (as Windows clients set them)


class Client(SmbpClient):
    def sd(self, o, info=OWNER | DACL):
        return parse_sd(self.query(o, 3, 0, info))

    def granted(self, o):
        return struct.unpack("<I", self.query(o, 1, 8))[0]  # FileAccessInformation


@pytest.fixture
def alice(smbd):
    c = Client(smbd)
    yield c
    c.close()


@pytest.fixture
def bob(smbd):
    c = Client(smbd, user="bob", password="bobpw")
    yield c
    c.close()


def _mkdir(c, name):
    """Create directory *name*; returns (open with READ_CONTROL|WRITE_DAC, the owner SID)."""
    d = c.open(name, READ_CONTROL | WRITE_DAC | LIST, CreateDisposition.FILE_CREATE, DIR)
    return d, c.sd(d)[1]


def _mxac():
    ctx = SMB2CreateContextRequest()
    ctx["buffer_name"] = CreateContextName.SMB2_CREATE_QUERY_MAXIMAL_ACCESS_REQUEST
    ctx["buffer_data"] = b""
    return [ctx]


def test_dacl_denying_the_user_refuses_create(alice, bob, tmp_path):
    d, me = _mkdir(alice, "locked")
    other_d, bobs = _mkdir(bob, "bobs")
    assert me != bobs and me[:2] == b"\x01\x05" and me[2:8] == b"\0\0\0\0\0\x05"  # S-1-5-21-x-y-z-rid
    other_d.close()
    alice.set_sd(d, DACL, dacl_sd(ace(0, 0, READ, me)))  # the owner may read, nothing else
    d.close()
    assert alice.status("locked", LIST, options=DIR) == 0
    assert alice.status("locked", WRITE_ATTRIBUTES, options=DIR) == STATUS_ACCESS_DENIED
    assert alice.status("locked\\new.txt", disposition=CreateDisposition.FILE_CREATE) == STATUS_ACCESS_DENIED
    assert alice.status("locked\\sub", disposition=CreateDisposition.FILE_CREATE, options=DIR) == STATUS_ACCESS_DENIED
    assert not (tmp_path / "share" / "locked" / "new.txt").exists()
    assert bob.status("locked", LIST, options=DIR) == STATUS_ACCESS_DENIED  # bob is not named at all
    # the owner keeps READ_CONTROL | WRITE_DAC: it can give itself access again
    d = alice.open("locked", WRITE_DAC, options=DIR)
    alice.set_sd(d, DACL, dacl_sd(ace(0, 0, FILE_ALL, me)))
    d.close()
    alice.open("locked\\new.txt", disposition=CreateDisposition.FILE_CREATE).close()
    assert (tmp_path / "share" / "locked" / "new.txt").exists()


def test_maximum_allowed_and_mxac_follow_the_descriptor(alice, tmp_path):
    f = alice.open("m.txt", READ_CONTROL | WRITE_DAC, CreateDisposition.FILE_CREATE)
    me = alice.sd(f)[1]
    alice.set_sd(f, DACL, dacl_sd(ace(1, 0, 0x2, EVERYONE), ace(0, 0, READ | 0x2, me)))  # WRITE_DATA denied first
    f.close()
    o = alice.open("m.txt", MAXIMUM_ALLOWED, contexts=_mxac())
    # READ by the ACE, WRITE_DAC as owner, DELETE through the share root's FILE_DELETE_CHILD
    want = READ | WRITE_DAC | DELETE
    assert alice.granted(o) == want
    assert o.contexts[0]["maximal_access"].get_value() == want
    o.close()
    assert alice.status("m.txt", 0x2) == STATUS_ACCESS_DENIED
    # a file without a stored descriptor: the share's rules, as before
    (tmp_path / "share" / "plain.txt").write_bytes(b"x")
    p = alice.open("plain.txt", MAXIMUM_ALLOWED, contexts=_mxac())
    assert alice.granted(p) == FILE_ALL and p.contexts[0]["maximal_access"].get_value() == FILE_ALL
    p.close()


def test_delete_through_file_delete_child_on_the_parent(alice, tmp_path):
    d, me = _mkdir(alice, "dd")
    f = alice.open("dd\\f.txt", READ_CONTROL | WRITE_DAC, CreateDisposition.FILE_CREATE)
    alice.set_sd(f, DACL, dacl_sd(ace(0, 0, READ, me)))  # no DELETE on the file
    f.close()
    assert alice.status("dd\\f.txt", DELETE) == 0  # the directory has no descriptor: it allows all
    alice.set_sd(d, DACL, dacl_sd(ace(0, 0, FILE_ALL & ~DELETE_CHILD, me)))
    assert alice.status("dd\\f.txt", DELETE) == STATUS_ACCESS_DENIED
    assert alice.status("dd\\f.txt", DELETE, options=DOC) == STATUS_ACCESS_DENIED
    alice.set_sd(d, DACL, dacl_sd(ace(0, 0, READ | DELETE_CHILD, me)))
    alice.open("dd\\f.txt", DELETE, options=DOC).close()
    assert not (tmp_path / "share" / "dd" / "f.txt").exists()
    d.close()


def test_inheritance_read_back(alice, bob):
    d, me = _mkdir(alice, "inh")
    alice.set_sd(d, DACL, dacl_sd(ace(0, OI | CI, FILE_ALL, me), ace(0, OI | CI | IO, GENERIC_ALL, CREATOR_OWNER),
                                  ace(0, OI, READ, EVERYONE), ace(0, CI, ADD_FILE | LIST, EVERYONE),
                                  control=AUTO))
    assert alice.sd(d, DACL)[0] & 0x0500 == 0x0400  # AUTO_INHERITED kept, AUTO_INHERIT_REQ not stored
    d.close()
    f = alice.open("inh\\f.txt", READ_CONTROL, CreateDisposition.FILE_CREATE)
    control, owner, aces = alice.sd(f)
    f.close()
    assert owner == me and control & 0x0400  # SE_DACL_AUTO_INHERITED
    assert aces == [(0, INH, FILE_ALL, me), (0, INH, FILE_ALL, me), (0, INH, READ, EVERYONE)]
    s = alice.open("inh\\sub", READ_CONTROL, CreateDisposition.FILE_CREATE, DIR)
    _, _, aces = alice.sd(s)
    s.close()
    assert aces == [(0, OI | CI | INH, FILE_ALL, me),
                    (0, INH, FILE_ALL, me), (0, OI | CI | IO | INH, GENERIC_ALL, CREATOR_OWNER),
                    (0, OI | IO | INH, READ, EVERYONE), (0, CI | INH, ADD_FILE | LIST, EVERYONE)]
    # bob: FILE_ADD_FILE in the subdirectory (CI), his file is his by CREATOR OWNER
    b = bob.open("inh\\sub\\b.txt", READ_CONTROL, CreateDisposition.FILE_CREATE)
    _, bob_sid, aces = bob.sd(b)
    b.close()
    assert bob_sid != me and aces == [(0, INH, FILE_ALL, me), (0, INH, FILE_ALL, bob_sid), (0, INH, READ, EVERYONE)]
    assert bob.status("inh\\sub\\b.txt", FILE_ALL) == 0
    assert bob.status("inh\\f.txt", 0x2) == STATUS_ACCESS_DENIED  # Everyone may only read alice's file


def test_secd_context_wins_over_inheritance(alice):
    d, me = _mkdir(alice, "ctx")
    alice.set_sd(d, DACL, dacl_sd(ace(0, OI, READ, EVERYONE), ace(0, 0, FILE_ALL, me), control=AUTO))
    d.close()
    sd_ctx = SMB2CreateContextRequest()
    sd_ctx["buffer_name"] = CreateContextName.SMB2_CREATE_SD_BUFFER
    sd_ctx["buffer_data"] = dacl_sd(ace(0, 0, READ | WRITE_DAC, me), owner=me)
    f = alice.open("ctx\\f.txt", READ_CONTROL | 0x2, CreateDisposition.FILE_CREATE, contexts=[sd_ctx])
    assert alice.granted(f) == READ_CONTROL | 0x2  # a new file: what was asked for
    _, owner, aces = alice.sd(f)
    f.close()
    assert owner == me and aces == [(0, 0, READ | WRITE_DAC, me), (0, INH, READ, EVERYONE)]
    assert alice.status("ctx\\f.txt", 0x2) == STATUS_ACCESS_DENIED


def test_checks_run_on_the_event_loop_for_cached_files(smbd, alice, tmp_path):
    """A plain open of an existing file is answered on the loop (core/connection.py,
    cached-only): the descriptor check is made there too, no detour to the workers."""
    from wsd_smb.store.paths import cached_lookup_ok

    if not cached_lookup_ok(str(tmp_path / "share")) or not smbd.server.config.inline_metadata:
        pytest.skip("no cached-only opens here")
    f = alice.open("loop.txt", READ_CONTROL | WRITE_DAC, CreateDisposition.FILE_CREATE)
    me = alice.sd(f)[1]
    alice.set_sd(f, DACL, dacl_sd(ace(0, 0, READ, me)))
    f.close()
    counts = lambda: smbd.call(lambda: (smbd.server.inline_done, smbd.server.inline_would_block))  # noqa: E731
    done0, blocked0 = counts()
    for _ in range(3):
        assert alice.status("loop.txt", 0x2) == STATUS_ACCESS_DENIED
        assert alice.status("loop.txt", READ) == 0
    done1, blocked1 = counts()
    assert blocked1 == blocked0 and done1 - done0 >= 9  # 6 CREATEs (+ the CLOSEs) on the loop


def test_only_an_admin_may_give_an_object_another_owner(alice, bob):
    a, me = _mkdir(alice, "own_a")
    b = bob.open("own_b.txt", READ_CONTROL | WRITE_DAC | 0x80000, CreateDisposition.FILE_CREATE)
    bob_sid = bob.sd(b)[1]
    owner_only = struct.pack("<BBHIIII", 1, 0, 0x8000, 20, 0, 0, 0)
    with pytest.raises(SMBResponseException) as e:
        bob.set_sd(b, OWNER, owner_only + me)  # bob (no admin) -> alice: STATUS_INVALID_OWNER
    assert e.value.status == 0xC000005A
    bob.set_sd(b, OWNER, owner_only + bob_sid)
    b.close()
    a.close()
    a = alice.open("own_a", READ_CONTROL | 0x80000, options=DIR)  # WRITE_OWNER
    alice.set_sd(a, OWNER, owner_only + bob_sid)  # alice is an admin (SeRestorePrivilege on Windows)
    assert alice.sd(a, OWNER)[1] == bob_sid
    a.close()
