"""Privileges over the wire (MS-SMB2 3.3.5.9 CREATE with FILE_OPEN_FOR_BACKUP_INTENT,
MS-FSA 2.1.5.1.2.1, MS-DTYP 2.5.3.2; SACL get/set MS-SMB2 3.3.5.20.3 / 3.3.5.21.3): a real
wsd-smbd driven by smbprotocol.  alice is an ``admin`` account (SeBackup-, SeRestore-,
SeTakeOwnership- and SeSecurityPrivilege), bob a plain one, carol a plain one given
SeBackupPrivilege through ``User.privileges``."""
from __future__ import annotations

import struct

import pytest
from secdesc import acl, ace, parse, sd
from smbpclient import SmbpClient

from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import CreateDisposition

from wsd_smb.core.state import User
from wsd_smb.store.security import SE_BACKUP_NAME

STATUS_ACCESS_DENIED = 0xC0000022
STATUS_PRIVILEGE_NOT_HELD = 0xC0000061
READ = 0x00120089  # FILE_GENERIC_READ
FILE_READ_DATA, FILE_WRITE_DATA = 0x1, 0x2
DELETE, READ_CONTROL, WRITE_DAC, WRITE_OWNER = 0x10000, 0x20000, 0x40000, 0x80000
ACCESS_SYSTEM_SECURITY = 0x01000000
FILE_ALL = 0x001F01FF
BACKUP_INTENT = 0x00004000  # FILE_OPEN_FOR_BACKUP_INTENT
OWNER, DACL, SACL = 0x1, 0x4, 0x8
SYSTEM_AUDIT_ACE_TYPE, SUCCESSFUL_ACCESS, FAILED_ACCESS = 0x02, 0x40, 0x80
EVERYONE = bytes([1, 1, 0, 0, 0, 0, 0, 1]) + struct.pack("<I", 0)


class Client(SmbpClient):
    def sd(self, o, info=OWNER | DACL):
        return parse(self.query(o, 3, 0, info))

    def sid(self) -> bytes:
        """The session's user SID: the owner of a file it creates."""
        name = f"whoami-{id(self)}.txt"
        o = self.open(name, READ_CONTROL | DELETE, CreateDisposition.FILE_CREATE, options=0x1000)  # delete-on-close
        me = self.sd(o, OWNER)[1]
        o.close()
        return me


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


def _status(fn, *a, **kw) -> int:
    try:
        fn(*a, **kw)
    except SMBResponseException as e:
        return e.status
    return 0


def _only_for(c: Client, name: str, who: bytes, data: bytes = b"") -> None:
    """Create *name* as *c* with *data* and a DACL that names *who* alone (full control)."""
    o = c.open(name, FILE_ALL, CreateDisposition.FILE_CREATE)
    if data:
        o.write(data, 0)
    c.set_sd(o, DACL, sd(dacl=acl(ace(0, 0, FILE_ALL, who))))
    o.close()


def test_backup_intent_needs_the_privilege(alice, bob):
    _only_for(alice, "alices.txt", alice.sid(), b"private")
    assert bob.status("alices.txt", READ) == STATUS_ACCESS_DENIED
    assert bob.status("alices.txt", READ, options=BACKUP_INTENT) == STATUS_ACCESS_DENIED
    assert bob.status("alices.txt", FILE_WRITE_DATA, options=BACKUP_INTENT) == STATUS_ACCESS_DENIED


def test_admin_reads_with_backup_and_writes_with_restore_intent(alice, bob, tmp_path):
    _only_for(bob, "bobs.txt", bob.sid(), b"bob's data")
    assert alice.status("bobs.txt", READ) == STATUS_ACCESS_DENIED  # without the intent: the DACL
    assert alice.status("bobs.txt", FILE_WRITE_DATA) == STATUS_ACCESS_DENIED
    o = alice.open("bobs.txt", READ, options=BACKUP_INTENT)  # SeBackupPrivilege
    assert o.read(0, 10) == b"bob's data"
    o.close()
    o = alice.open("bobs.txt", FILE_WRITE_DATA, options=BACKUP_INTENT)  # SeRestorePrivilege
    o.write(b"restored", 0)
    o.close()
    assert (tmp_path / "share" / "bobs.txt").read_bytes() == b"restoredta"  # 8 bytes over the first 8
    assert bob.status("bobs.txt", READ) == 0  # the DACL is unchanged


def test_admin_takes_ownership_of_a_file_that_denies_it_everything(alice, bob):
    me = alice.sid()
    b = bob.open("taken.txt", FILE_ALL, CreateDisposition.FILE_CREATE)
    bob.set_sd(b, DACL, sd(dacl=acl()))  # empty DACL: only bob, the owner, keeps READ_CONTROL | WRITE_DAC
    b.close()
    assert alice.status("taken.txt", READ_CONTROL) == STATUS_ACCESS_DENIED
    assert bob.status("taken.txt", WRITE_OWNER) == STATUS_ACCESS_DENIED  # no privilege
    o = alice.open("taken.txt", WRITE_OWNER)  # SeTakeOwnershipPrivilege
    alice.set_sd(o, OWNER, sd(owner=me))
    o.close()
    o = alice.open("taken.txt", READ_CONTROL | WRITE_DAC)  # now as the owner
    assert alice.sd(o, OWNER)[1] == me
    alice.set_sd(o, DACL, sd(dacl=acl(ace(0, 0, FILE_ALL, me))))
    o.close()
    assert alice.status("taken.txt", FILE_ALL) == 0
    assert bob.status("taken.txt", READ_CONTROL) == STATUS_ACCESS_DENIED  # no longer his


def test_admin_sets_and_reads_back_a_sacl(alice):
    sacl = acl(ace(SYSTEM_AUDIT_ACE_TYPE, SUCCESSFUL_ACCESS | FAILED_ACCESS, DELETE | WRITE_DAC, EVERYONE))
    o = alice.open("audited.txt", READ_CONTROL | WRITE_DAC | ACCESS_SYSTEM_SECURITY, CreateDisposition.FILE_CREATE)
    alice.set_sd(o, SACL, sd(sacl=sacl))
    control, _, got, _ = alice.sd(o, SACL)
    assert got == sacl and control & 0x0010  # SE_SACL_PRESENT
    o.close()
    # kept: a later open with ACCESS_SYSTEM_SECURITY reads it; one without may not ask for it
    o = alice.open("audited.txt", ACCESS_SYSTEM_SECURITY)
    assert alice.sd(o, SACL)[2] == sacl
    o.close()
    o = alice.open("audited.txt", READ_CONTROL | WRITE_DAC)
    assert _status(alice.query, o, 3, 0, SACL) == STATUS_ACCESS_DENIED
    assert _status(alice.set_sd, o, SACL, sd(sacl=acl())) == STATUS_ACCESS_DENIED
    assert alice.sd(o, DACL)[2] is None  # not asked for, not returned
    o.close()


def test_non_admin_asking_access_system_security(alice, bob):
    alice.open("plain.txt", FILE_ALL, CreateDisposition.FILE_CREATE).close()
    assert bob.status("plain.txt", READ_CONTROL | ACCESS_SYSTEM_SECURITY) == STATUS_PRIVILEGE_NOT_HELD
    assert bob.status("plain.txt", ACCESS_SYSTEM_SECURITY, options=BACKUP_INTENT) == STATUS_PRIVILEGE_NOT_HELD
    assert bob.status("new.txt", ACCESS_SYSTEM_SECURITY, CreateDisposition.FILE_CREATE) == STATUS_PRIVILEGE_NOT_HELD


def test_configured_privilege_of_a_non_admin(smbd, alice):
    """carol: SeBackupPrivilege from her [[user]] entry -- reads with backup intent, no more."""
    smbd.call(lambda: smbd.server.config.users.__setitem__(
        "carol", User.with_password("carol", "carolpw", privileges=frozenset({SE_BACKUP_NAME}))))
    _only_for(alice, "report.txt", alice.sid(), b"numbers")
    carol = Client(smbd, user="carol", password="carolpw")
    try:
        assert carol.status("report.txt", READ) == STATUS_ACCESS_DENIED
        o = carol.open("report.txt", READ, options=BACKUP_INTENT)
        assert o.read(0, 7) == b"numbers"
        o.close()
        assert carol.status("report.txt", FILE_WRITE_DATA, options=BACKUP_INTENT) == STATUS_ACCESS_DENIED
        assert carol.status("report.txt", WRITE_OWNER) == STATUS_ACCESS_DENIED
        assert carol.status("report.txt", ACCESS_SYSTEM_SECURITY) == STATUS_PRIVILEGE_NOT_HELD
        carol.open("report.txt", ACCESS_SYSTEM_SECURITY, options=BACKUP_INTENT).close()
    finally:
        carol.close()
