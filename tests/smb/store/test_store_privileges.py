"""Privileges in the access checks (MS-DTYP 2.5.3.2, MS-FSA 2.1.5.1.2.1): which accounts
hold SeBackupPrivilege, SeRestorePrivilege, SeTakeOwnershipPrivilege and
SeSecurityPrivilege, what each grants (backup/restore only with FILE_OPEN_FOR_BACKUP_INTENT),
the owner rule, the SACL behind ACCESS_SYSTEM_SECURITY -- the pure functions, then the
object store on a real directory.  Descriptors are assembled here with struct."""
from __future__ import annotations

import struct

import pytest
from conftest import SHARE_ALL, status_of
from secdesc import acl, ace, sd

from wsd_smb.ntstatus import NtStatusError
from wsd_smb.store.constants import CreateDisposition as D
from wsd_smb.store.security import (
    ADMIN_PRIVILEGES,
    SE_BACKUP_NAME,
    SE_RESTORE_NAME,
    SE_SECURITY_NAME,
    SE_TAKE_OWNERSHIP_NAME,
    Descriptor,
    check_owner,
    privilege_access,
    token_for,
)

STATUS_ACCESS_DENIED = 0xC0000022
STATUS_PRIVILEGE_NOT_HELD = 0xC0000061
STATUS_INVALID_OWNER = 0xC000005A
FILE_ALL = 0x001F01FF
READ = 0x00120089  # FILE_GENERIC_READ
WRITE = 0x00120116  # FILE_GENERIC_WRITE
FILE_WRITE_DATA, FILE_ADD_FILE, FILE_TRAVERSE, FILE_READ_ATTRIBUTES = 0x2, 0x2, 0x20, 0x80
DELETE, READ_CONTROL, WRITE_DAC, WRITE_OWNER = 0x10000, 0x20000, 0x40000, 0x80000
ACCESS_SYSTEM_SECURITY, MAXIMUM_ALLOWED = 0x01000000, 0x02000000
BACKUP_INTENT, DIRECTORY_FILE = 0x00004000, 0x00000001
OWNER, DACL, SACL = 0x1, 0x4, 0x8
SYSTEM_AUDIT_ACE_TYPE, SUCCESSFUL_ACCESS, FAILED_ACCESS = 0x02, 0x40, 0x80

# what Windows documents for the two privileges (SE_BACKUP_NAME / SE_RESTORE_NAME)
BACKUP_SET = READ_CONTROL | ACCESS_SYSTEM_SECURITY | READ | FILE_TRAVERSE
RESTORE_SET = WRITE_DAC | WRITE_OWNER | ACCESS_SYSTEM_SECURITY | WRITE | FILE_ADD_FILE | 0x4 | DELETE

ADMIN = token_for("WSD", "admin", is_admin=True)
BOB = token_for("WSD", "bob")
BACKUP_OP = token_for("WSD", "backupop", privileges=frozenset({SE_BACKUP_NAME}))
EVERYONE = bytes([1, 1, 0, 0, 0, 0, 0, 1]) + struct.pack("<I", 0)


# ------------------------------------------------------------------ tokens and rules
def test_who_holds_which_privileges():
    assert ADMIN.privileges == {SE_BACKUP_NAME, SE_RESTORE_NAME, SE_TAKE_OWNERSHIP_NAME, SE_SECURITY_NAME}
    assert ADMIN_PRIVILEGES == ADMIN.privileges
    assert BOB.privileges == frozenset()
    assert BACKUP_OP.privileges == {SE_BACKUP_NAME}
    # configured privileges add to an admin's; guest and anonymous hold none
    assert token_for("WSD", "admin", is_admin=True, privileges=frozenset({SE_BACKUP_NAME})).privileges \
        == ADMIN.privileges
    assert token_for("WSD", "g", is_guest=True, privileges=frozenset({SE_BACKUP_NAME})).privileges == frozenset()
    assert token_for("WSD", "", is_anonymous=True, privileges=frozenset({SE_BACKUP_NAME})).privileges == frozenset()


def test_privilege_access_rules():
    # no privileges: nothing, whatever is asked
    assert privilege_access(BOB, 0xFFFFFFFF, backup_intent=True, maximum=True) == 0
    # without backup intent only the explicitly requested ACCESS_SYSTEM_SECURITY / WRITE_OWNER
    assert privilege_access(ADMIN, READ | WRITE | WRITE_OWNER | ACCESS_SYSTEM_SECURITY) \
        == WRITE_OWNER | ACCESS_SYSTEM_SECURITY
    assert privilege_access(ADMIN, 0, maximum=True) == 0  # MAXIMUM_ALLOWED alone exercises none
    # with backup intent: the backup and restore sets, of what is asked
    assert privilege_access(ADMIN, READ | WRITE, backup_intent=True) == READ | WRITE
    assert privilege_access(ADMIN, FILE_ALL, backup_intent=True) == FILE_ALL & (BACKUP_SET | RESTORE_SET)
    assert privilege_access(ADMIN, 0, backup_intent=True, maximum=True) \
        == (BACKUP_SET | RESTORE_SET) & ~ACCESS_SYSTEM_SECURITY
    # SeBackupPrivilege alone: reading, not writing; ACCESS_SYSTEM_SECURITY only with the intent
    assert privilege_access(BACKUP_OP, READ | WRITE, backup_intent=True) == READ
    assert privilege_access(BACKUP_OP, ACCESS_SYSTEM_SECURITY) == 0
    assert privilege_access(BACKUP_OP, ACCESS_SYSTEM_SECURITY, backup_intent=True) == ACCESS_SYSTEM_SECURITY
    assert privilege_access(BACKUP_OP, 0, backup_intent=True, maximum=True) == BACKUP_SET & ~ACCESS_SYSTEM_SECURITY
    restorer = token_for("WSD", "r", privileges=frozenset({SE_RESTORE_NAME}))
    assert privilege_access(restorer, DELETE | WRITE_DAC | READ, backup_intent=True) == DELETE | WRITE_DAC \
        | READ_CONTROL | 0x00100000  # FILE_GENERIC_WRITE's READ_CONTROL and SYNCHRONIZE
    owner_taker = token_for("WSD", "t", privileges=frozenset({SE_TAKE_OWNERSHIP_NAME}))
    assert privilege_access(owner_taker, WRITE_OWNER | WRITE_DAC, backup_intent=True) == WRITE_OWNER


def _status(fn, *a) -> int:
    try:
        fn(*a)
    except NtStatusError as e:
        return e.status
    return 0


def test_owner_rule():
    assert _status(check_owner, BOB, BOB.user) == 0
    assert _status(check_owner, BOB, ADMIN.user) == STATUS_INVALID_OWNER
    assert _status(check_owner, ADMIN, BOB.user) == 0  # SeRestorePrivilege: any owner
    taker = token_for("WSD", "t", privileges=frozenset({SE_TAKE_OWNERSHIP_NAME}))
    assert _status(check_owner, taker, taker.user) == 0  # taking ownership = becoming the owner
    assert _status(check_owner, taker, BOB.user) == STATUS_INVALID_OWNER
    restorer = token_for("WSD", "r", privileges=frozenset({SE_RESTORE_NAME}))
    assert _status(check_owner, restorer, BOB.user) == 0


# ------------------------------------------------------------------ the object store
def _open(store, share, name, token, access, disposition=D.FILE_OPEN, options=0, sd=None):
    return store.create(share, name, desired_access=access, share_access=SHARE_ALL,
                        create_disposition=disposition, create_options=options, token=token,
                        security_descriptor=sd).open


def _locked(store, share, name, is_dir=False):
    """*name* owned by bob with an empty DACL: nobody is granted anything by it."""
    o = _open(store, share, name, None, FILE_ALL, D.FILE_CREATE, DIRECTORY_FILE if is_dir else 0)
    store.set_security(o, OWNER | DACL, sd(BOB.user, acl()))
    store.close(o)


def _st(store, share, name, token, access, options=0, disposition=D.FILE_OPEN) -> int:
    """The NTSTATUS of opening (and closing) *name*: 0 on success."""
    try:
        o = _open(store, share, name, token, access, disposition, options)
    except NtStatusError as e:
        return e.status
    store.close(o)
    return 0


def test_backup_intent_reads_and_restore_writes_past_the_dacl(store, share):
    _locked(store, share, "f.txt")
    for tok in (BOB, ADMIN, BACKUP_OP):  # without the intent the DACL rules for everyone
        assert _st(store, share, "f.txt", tok, READ) == STATUS_ACCESS_DENIED
        assert _st(store, share, "f.txt", tok, FILE_WRITE_DATA) == STATUS_ACCESS_DENIED
    assert _st(store, share, "f.txt", BOB, READ, BACKUP_INTENT) == STATUS_ACCESS_DENIED  # no privilege
    o = _open(store, share, "f.txt", ADMIN, READ, options=BACKUP_INTENT)
    assert o.granted_access == READ
    store.close(o)
    o = _open(store, share, "f.txt", ADMIN, WRITE | DELETE, options=BACKUP_INTENT)
    assert o.granted_access == WRITE | DELETE
    store.close(o)
    # backup operator: reads, does not write
    store.close(_open(store, share, "f.txt", BACKUP_OP, READ, options=BACKUP_INTENT))
    assert _st(store, share, "f.txt", BACKUP_OP, FILE_WRITE_DATA, BACKUP_INTENT) == STATUS_ACCESS_DENIED
    # an overwrite is a write: restore
    assert _st(store, share, "f.txt", BACKUP_OP, READ, BACKUP_INTENT, D.FILE_OVERWRITE) == STATUS_ACCESS_DENIED
    store.close(_open(store, share, "f.txt", ADMIN, READ, D.FILE_OVERWRITE, BACKUP_INTENT))


def test_maximum_allowed_with_and_without_backup_intent(store, share):
    _locked(store, share, "m.txt")
    # the share root has no descriptor: DELETE (FILE_DELETE_CHILD) and READ_ATTRIBUTES
    # (FILE_LIST_DIRECTORY) through the parent; no privilege is exercised
    o = _open(store, share, "m.txt", ADMIN, MAXIMUM_ALLOWED)
    assert o.granted_access == DELETE | FILE_READ_ATTRIBUTES and o.maximal_access == DELETE | FILE_READ_ATTRIBUTES
    store.close(o)
    o = _open(store, share, "m.txt", ADMIN, MAXIMUM_ALLOWED, options=BACKUP_INTENT)
    want = ((BACKUP_SET | RESTORE_SET) & FILE_ALL) | DELETE | FILE_READ_ATTRIBUTES
    assert o.granted_access == want and o.maximal_access == want
    store.close(o)
    o = _open(store, share, "m.txt", BACKUP_OP, MAXIMUM_ALLOWED, options=BACKUP_INTENT)
    assert o.granted_access == (BACKUP_SET & FILE_ALL) | DELETE
    store.close(o)
    o = _open(store, share, "m.txt", BOB, MAXIMUM_ALLOWED, options=BACKUP_INTENT)
    assert o.granted_access == DELETE | FILE_READ_ATTRIBUTES | READ_CONTROL | WRITE_DAC  # + the owner's
    store.close(o)


def test_restore_creates_in_a_directory_that_denies_adding(store, share, root):
    _locked(store, share, "d", is_dir=True)
    assert _st(store, share, "d\\new.txt", ADMIN, FILE_ALL, 0, D.FILE_CREATE) == STATUS_ACCESS_DENIED
    assert _st(store, share, "d\\new.txt", BACKUP_OP, FILE_ALL, BACKUP_INTENT, D.FILE_CREATE) == STATUS_ACCESS_DENIED
    assert _st(store, share, "d\\new.txt", BOB, FILE_ALL, BACKUP_INTENT, D.FILE_CREATE) == STATUS_ACCESS_DENIED
    assert not (root / "d" / "new.txt").exists()
    store.close(_open(store, share, "d\\new.txt", ADMIN, FILE_ALL, D.FILE_CREATE, BACKUP_INTENT))
    store.close(_open(store, share, "d\\sub", ADMIN, FILE_ALL, D.FILE_CREATE, BACKUP_INTENT | DIRECTORY_FILE))
    assert (root / "d" / "new.txt").is_file() and (root / "d" / "sub").is_dir()


def test_take_ownership_then_rewrite_the_dacl(store, share):
    _locked(store, share, "t.txt")
    assert _st(store, share, "t.txt", BOB, WRITE_OWNER) == STATUS_ACCESS_DENIED  # bob owns it: no WRITE_OWNER
    assert _st(store, share, "t.txt", ADMIN, WRITE_DAC) == STATUS_ACCESS_DENIED  # not the owner (yet)
    o = _open(store, share, "t.txt", ADMIN, WRITE_OWNER)  # SeTakeOwnershipPrivilege
    store.set_security(o, OWNER, sd(ADMIN.user))
    store.close(o)
    o = _open(store, share, "t.txt", ADMIN, READ_CONTROL | WRITE_DAC)  # the owner's implicit rights
    assert Descriptor.parse(store.get_security(o, OWNER)).owner == ADMIN.user
    store.set_security(o, DACL, sd(dacl=acl(ace(0, 0, FILE_ALL, ADMIN.user))))
    store.close(o)
    store.close(_open(store, share, "t.txt", ADMIN, FILE_ALL))
    # the take-ownership privilege alone: own it, but give it to nobody else
    taker = token_for("WSD", "t", privileges=frozenset({SE_TAKE_OWNERSHIP_NAME}))
    _locked(store, share, "t2.txt")
    o = _open(store, share, "t2.txt", taker, WRITE_OWNER)
    assert status_of(store.set_security, o, OWNER, sd(ADMIN.user)) == STATUS_INVALID_OWNER
    store.set_security(o, OWNER, sd(taker.user))
    store.close(o)


def test_access_system_security_and_the_sacl(store, share):
    store.close(_open(store, share, "s.txt", None, FILE_ALL, D.FILE_CREATE))
    assert _st(store, share, "s.txt", BOB, READ_CONTROL | ACCESS_SYSTEM_SECURITY) == STATUS_PRIVILEGE_NOT_HELD
    assert _st(store, share, "s.txt", None, ACCESS_SYSTEM_SECURITY) == STATUS_PRIVILEGE_NOT_HELD  # no identity
    assert _st(store, share, "s.txt", BACKUP_OP, ACCESS_SYSTEM_SECURITY) == STATUS_PRIVILEGE_NOT_HELD
    store.close(_open(store, share, "s.txt", BACKUP_OP, ACCESS_SYSTEM_SECURITY, options=BACKUP_INTENT))
    sacl = acl(ace(SYSTEM_AUDIT_ACE_TYPE, SUCCESSFUL_ACCESS | FAILED_ACCESS, DELETE | WRITE, EVERYONE))
    o = _open(store, share, "s.txt", ADMIN, READ_CONTROL | WRITE_DAC | ACCESS_SYSTEM_SECURITY)
    assert o.granted_access & ACCESS_SYSTEM_SECURITY
    assert Descriptor.parse(store.get_security(o, SACL)).sacl is None  # none yet
    store.set_security(o, SACL, sd(sacl=sacl))
    got = Descriptor.parse(store.get_security(o, SACL | DACL))
    assert got.sacl == sacl and got.control & 0x0010 and got.dacl is not None
    store.close(o)
    # kept with the descriptor; an open without ACCESS_SYSTEM_SECURITY may neither read nor set it
    o = _open(store, share, "s.txt", ADMIN, READ_CONTROL | WRITE_DAC)
    assert status_of(store.get_security, o, SACL) == STATUS_ACCESS_DENIED
    assert status_of(store.set_security, o, SACL, sd(sacl=acl())) == STATUS_ACCESS_DENIED
    assert Descriptor.parse(store.get_security(o, DACL)).sacl is None  # not asked for: not returned
    store.close(o)
    o = _open(store, share, "s.txt", ADMIN, ACCESS_SYSTEM_SECURITY)
    assert Descriptor.parse(store.get_security(o, SACL)).sacl == sacl  # no READ_CONTROL needed for the SACL
    store.close(o)


def test_creator_sacl_is_kept_for_seSecurityPrivilege_only(store, share):
    sacl = acl(ace(SYSTEM_AUDIT_ACE_TYPE, FAILED_ACCESS, FILE_ALL, EVERYONE))
    dacl = acl(ace(0, 0, FILE_ALL, EVERYONE))
    for name, tok, kept in (("a.txt", ADMIN, True), ("b.txt", BOB, False)):
        o = _open(store, share, name, tok, FILE_ALL, D.FILE_CREATE, sd=sd(tok.user, dacl, sacl))
        store.close(o)
        o = _open(store, share, name, ADMIN, ACCESS_SYSTEM_SECURITY)
        assert Descriptor.parse(store.get_security(o, SACL)).sacl == (sacl if kept else None)
        store.close(o)


@pytest.mark.parametrize("value,expect", [
    (["SeBackupPrivilege"], {SE_BACKUP_NAME}),
    (["sebackupprivilege", "SeRestorePrivilege"], {SE_BACKUP_NAME, SE_RESTORE_NAME}),
    ("SeSecurityPrivilege", {SE_SECURITY_NAME}),
    ([], set()),
])
def test_config_user_privileges(tmp_path, value, expect):
    from wsd_smb.server.config import load

    conf = tmp_path / "c.toml"
    conf.write_text(f'[[share]]\nname = "s"\npath = "{tmp_path}"\n'
                    f'[[user]]\nname = "op"\npassword = "pw"\nprivileges = {_toml(value)}\n')
    user = load(str(conf)).server.users["op"]
    assert user.privileges == expect and not user.is_admin


@pytest.mark.parametrize("value", [["SeDebugPrivilege"], ["SeBackup"], [1], 3])
def test_config_user_privileges_rejected(tmp_path, value):
    from wsd_smb.server.config import ConfigError, load

    conf = tmp_path / "c.toml"
    conf.write_text(f'[[share]]\nname = "s"\npath = "{tmp_path}"\n'
                    f'[[user]]\nname = "op"\npassword = "pw"\nprivileges = {_toml(value)}\n')
    with pytest.raises(ConfigError, match="privilege"):
        load(str(conf))


def _toml(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return f'"{v}"' if isinstance(v, str) else str(v)
