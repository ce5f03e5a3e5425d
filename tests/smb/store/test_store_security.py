"""Access checks against security descriptors (MS-DTYP 2.5.3.2), the session identity,
and inheritance on create (MS-DTYP 2.5.3.4): the pure functions with hand-built
descriptors (bytes assembled here with struct, not with the code under test), then the
object store on a real directory."""
from __future__ import annotations

import os
import struct

from conftest import SHARE_ALL, status_of
from secdesc import acl, ace

from wsd_smb.store.constants import CreateDisposition as D
from wsd_smb.store.security import (
    Descriptor,
    inherit,
    machine_sid,
    maximum_allowed,
    access_check,
    parse_acl,
    token_for,
    user_rid,
)

STATUS_ACCESS_DENIED = 0xC0000022
FILE_ALL = 0x001F01FF
READ = 0x00120089  # FILE_GENERIC_READ
DELETE, READ_CONTROL, WRITE_DAC = 0x10000, 0x20000, 0x40000
FILE_WRITE_DATA, FILE_ADD_SUBDIRECTORY, FILE_DELETE_CHILD = 0x2, 0x4, 0x40
GENERIC_ALL, GENERIC_READ, MAXIMUM_ALLOWED = 0x10000000, 0x80000000, 0x02000000
OI, CI, NP, IO, INH = 0x01, 0x02, 0x04, 0x08, 0x10
ALLOW, DENY = 0, 1


def sid(text: str) -> bytes:
    p = text.split("-")
    subs = [int(x) for x in p[3:]]
    return bytes([1, len(subs)]) + int(p[2]).to_bytes(6, "big") + b"".join(struct.pack("<I", s) for s in subs)


def sd_bytes(owner: bytes | None, dacl: bytes | None, present: bool = True, control: int = 0) -> bytes:
    """A self-relative descriptor: owner (if any) then DACL (if any)."""
    ctl = 0x8000 | control | (0x0004 if present else 0)
    pos, body, off_owner, off_dacl = 20, b"", 0, 0
    if owner is not None:
        off_owner, body, pos = pos, body + owner, pos + len(owner)
    if dacl is not None:
        off_dacl, body = pos, body + dacl
    return struct.pack("<BBHIIII", 1, 0, ctl, off_owner, 0, 0, off_dacl) + body


def sd(owner, *aces, present=True, control=0) -> Descriptor:
    return Descriptor.parse(sd_bytes(owner, acl(*aces) if present else None, present, control))


EVERYONE, AUTH_USERS, ANONYMOUS = sid("S-1-1-0"), sid("S-1-5-11"), sid("S-1-5-7")
CREATOR_OWNER, CREATOR_GROUP = sid("S-1-3-0"), sid("S-1-3-1")
ADMINS, USERS, OWNER_RIGHTS = sid("S-1-5-32-544"), sid("S-1-5-32-545"), sid("S-1-3-4")
ALICE = token_for("WSD", "alice")
BOB = token_for("WSD", "bob")
ADMIN = token_for("WSD", "root", is_admin=True)
GUEST = token_for("WSD", "guest", is_guest=True)
ANON = token_for("WSD", "", is_anonymous=True)
OTHER = sid("S-1-5-21-1-2-3-1234")


# ---------------------------------------------------------------- identity
def test_token_sids_are_stable_and_well_known():
    m = machine_sid("WSD")
    assert m[0] == 21 and len(m) == 4 and m == machine_sid("wsd")  # the server name's case does not matter
    rid = user_rid("alice")
    assert rid >= 1000 and rid == user_rid("ALICE")
    assert ALICE.user == sid("S-1-5-21-%d-%d-%d-%d" % (m[1], m[2], m[3], rid))
    assert ALICE is token_for("WSD", "alice")  # one token per identity
    assert ALICE.user != BOB.user and ALICE.user != token_for("OTHER", "alice").user
    for s in (EVERYONE, AUTH_USERS, USERS, sid("S-1-5-2")):
        assert s in ALICE.sids
    assert ADMINS not in ALICE.sids and ADMINS in ADMIN.sids
    assert GUEST.user == sid("S-1-5-21-%d-%d-%d-501" % m[1:]) and AUTH_USERS not in GUEST.sids
    assert sid("S-1-5-32-546") in GUEST.sids and EVERYONE in GUEST.sids
    assert ANON.user == ANONYMOUS and EVERYONE not in ANON.sids and AUTH_USERS not in ANON.sids
    assert ALICE.primary_group == sid("S-1-5-21-%d-%d-%d-513" % m[1:])


# ---------------------------------------------------------------- access check
def test_null_dacl_grants_everything_empty_dacl_nothing_but_the_owner():
    null = Descriptor.parse(sd_bytes(OTHER, None, present=True))
    assert maximum_allowed(null, ANON) == FILE_ALL
    absent = Descriptor.parse(sd_bytes(OTHER, None, present=False))
    assert maximum_allowed(absent, BOB) == FILE_ALL
    empty = sd(ALICE.user)
    assert maximum_allowed(empty, BOB) == 0
    assert maximum_allowed(empty, ALICE) == READ_CONTROL | WRITE_DAC  # the owner's implicit rights
    assert access_check(empty, ALICE, READ_CONTROL) == 0
    assert access_check(empty, ALICE, FILE_WRITE_DATA | READ_CONTROL) == FILE_WRITE_DATA


def test_deny_and_allow_in_stored_order():
    deny_first = sd(OTHER, ace(DENY, 0, FILE_WRITE_DATA, ALICE.user), ace(ALLOW, 0, FILE_ALL, EVERYONE))
    assert maximum_allowed(deny_first, ALICE) == FILE_ALL & ~FILE_WRITE_DATA
    assert maximum_allowed(deny_first, BOB) == FILE_ALL
    assert access_check(deny_first, ALICE, FILE_WRITE_DATA | 1) == FILE_WRITE_DATA
    allow_first = sd(OTHER, ace(ALLOW, 0, FILE_ALL, EVERYONE), ace(DENY, 0, FILE_WRITE_DATA, ALICE.user))
    assert maximum_allowed(allow_first, ALICE) == FILE_ALL  # not canonical order: the allow came first
    # a deny through a group the user is in
    by_group = sd(OTHER, ace(DENY, 0, DELETE, AUTH_USERS), ace(ALLOW, 0, FILE_ALL, ALICE.user))
    assert maximum_allowed(by_group, ALICE) == FILE_ALL & ~DELETE
    assert maximum_allowed(by_group, ANON) == 0  # anonymous is not in Everyone / Authenticated Users


def test_generic_bits_inherit_only_and_unknown_aces():
    d = sd(OTHER, ace(ALLOW, IO | OI | CI, FILE_ALL, ALICE.user),  # inherit-only: ignored
           ace(ALLOW, 0, GENERIC_READ, ALICE.user),  # mapped: FILE_GENERIC_READ
           ace(0x05, 0, FILE_ALL, ALICE.user))  # an object ACE type: not evaluated
    assert maximum_allowed(d, ALICE) == READ
    assert maximum_allowed(sd(OTHER, ace(ALLOW, INH, GENERIC_ALL, EVERYONE)), BOB) == FILE_ALL


def test_owner_rights_ace_replaces_the_implicit_owner_rights():
    d = sd(ALICE.user, ace(ALLOW, 0, READ, OWNER_RIGHTS))
    assert maximum_allowed(d, ALICE) == READ  # no WRITE_DAC: OWNER RIGHTS says what the owner gets
    assert maximum_allowed(d, BOB) == 0
    # CREATOR OWNER in an effective ACE names nobody (it is substituted at inheritance only)
    assert maximum_allowed(sd(ALICE.user, ace(ALLOW, 0, FILE_ALL, CREATOR_OWNER)), ALICE) == READ_CONTROL | WRITE_DAC


# ---------------------------------------------------------------- inheritance
def _aces(d: Descriptor):
    return [(a.ace_type, a.flags, a.mask, a.sid) for a in parse_acl(d.dacl)]


AUTO = 0x0400  # SE_DACL_AUTO_INHERITED
SYSTEM = sid("S-1-5-18")


def test_inheritance_to_a_file_and_a_directory():
    parent = sd(OTHER,
                ace(ALLOW, OI | CI, FILE_ALL, OTHER),
                ace(ALLOW, OI | CI | IO, GENERIC_ALL, CREATOR_OWNER),
                ace(ALLOW, OI, READ, EVERYONE),
                ace(DENY, CI, FILE_DELETE_CHILD, BOB.user),
                ace(ALLOW, CI | NP, READ, AUTH_USERS),
                ace(ALLOW, 0, FILE_ALL, ADMINS),  # not inheritable
                control=AUTO)  # an auto-inherited DACL: children's ACEs are flagged INHERITED_ACE
    f = inherit(parent, False, None, ALICE.user, ALICE.primary_group)
    assert f.owner == ALICE.user and f.group == ALICE.primary_group and f.control & 0x0004 and f.control & AUTO
    assert _aces(f) == [(ALLOW, INH, FILE_ALL, OTHER), (ALLOW, INH, FILE_ALL, ALICE.user),
                        (ALLOW, INH, READ, EVERYONE)]
    d = inherit(parent, True, None, ALICE.user, ALICE.primary_group)
    assert _aces(d) == [
        (ALLOW, OI | CI | INH, FILE_ALL, OTHER),
        (ALLOW, INH, FILE_ALL, ALICE.user), (ALLOW, OI | CI | IO | INH, GENERIC_ALL, CREATOR_OWNER),
        (ALLOW, OI | IO | INH, READ, EVERYONE),  # kept for the directory's own files only
        (DENY, CI | INH, FILE_DELETE_CHILD, BOB.user),
        (ALLOW, INH, READ, AUTH_USERS),  # NO_PROPAGATE: effective here, not passed on
    ]
    # what the new objects grant
    assert maximum_allowed(f, ALICE) == FILE_ALL and maximum_allowed(f, BOB) == READ
    assert maximum_allowed(d, BOB) == READ
    # the directory passes on what it inherited: a file two levels down
    g = inherit(d, False, None, BOB.user, BOB.primary_group)
    assert _aces(g) == [(ALLOW, INH, FILE_ALL, OTHER), (ALLOW, INH, FILE_ALL, BOB.user),
                        (ALLOW, INH, READ, EVERYONE)]
    # a parent DACL that is not auto-inherited passes the same ACEs on without INHERITED_ACE
    plain = Descriptor.parse(sd_bytes(OTHER, parent.dacl))
    pf = inherit(plain, False, None, ALICE.user, ALICE.primary_group)
    assert not pf.control & AUTO
    assert _aces(pf) == [(ALLOW, 0, FILE_ALL, OTHER), (ALLOW, 0, FILE_ALL, ALICE.user), (ALLOW, 0, READ, EVERYONE)]
    assert _aces(inherit(plain, True, None, ALICE.user, ALICE.primary_group))[2] == (ALLOW, OI | CI | IO, GENERIC_ALL,
                                                                                    CREATOR_OWNER)
    # golden bytes of the file's descriptor
    assert f.pack() == sd_bytes_full(ALICE.user, ALICE.primary_group, 0x8404, acl(
        ace(ALLOW, INH, FILE_ALL, OTHER), ace(ALLOW, INH, FILE_ALL, ALICE.user), ace(ALLOW, INH, READ, EVERYONE)))


def sd_bytes_full(owner: bytes, group: bytes, control: int, dacl: bytes) -> bytes:
    return (struct.pack("<BBHIIII", 1, 0, control, 20, 20 + len(owner), 0, 20 + len(owner) + len(group))
            + owner + group + dacl)


def test_creator_descriptor_wins_and_merges():
    parent = sd(OTHER, ace(ALLOW, OI, READ, EVERYONE), control=AUTO)
    explicit = Descriptor.parse(sd_bytes(None, acl(ace(ALLOW, 0, FILE_ALL, BOB.user))))
    n = inherit(parent, False, explicit, ALICE.user, ALICE.primary_group)
    assert n.owner == ALICE.user  # the creator gave none
    assert _aces(n) == [(ALLOW, 0, FILE_ALL, BOB.user), (ALLOW, INH, READ, EVERYONE)] and n.control & AUTO
    # no auto-inheritance from a parent whose DACL is not auto-inherited: the creator's DACL alone
    n2 = inherit(sd(OTHER, ace(ALLOW, OI, READ, EVERYONE)), False, explicit, ALICE.user, ALICE.primary_group)
    assert _aces(n2) == [(ALLOW, 0, FILE_ALL, BOB.user)] and not n2.control & AUTO
    # GENERIC_* in the creator's ACEs are stored mapped
    g = Descriptor.parse(sd_bytes(None, acl(ace(ALLOW, 0, GENERIC_READ, BOB.user),
                                                  ace(ALLOW, OI | IO, GENERIC_READ, BOB.user))))
    assert _aces(inherit(None, False, g, ALICE.user, ALICE.primary_group)) == [
        (ALLOW, 0, READ, BOB.user), (ALLOW, OI | IO, GENERIC_READ, BOB.user)]
    protected = Descriptor.parse(sd_bytes(OTHER, acl(ace(ALLOW, 0, FILE_ALL, BOB.user)), control=0x1000))
    p = inherit(parent, False, protected, ALICE.user, ALICE.primary_group)
    assert p.owner == OTHER and _aces(p) == [(ALLOW, 0, FILE_ALL, BOB.user)] and p.control & 0x1000
    null = inherit(parent, False, Descriptor.parse(sd_bytes(None, None)), ALICE.user, ALICE.primary_group)
    assert null.control & 0x0004 and null.dacl is None  # a NULL DACL stays NULL
    # nothing inheritable from a stored parent: the token's default DACL, owner and SYSTEM
    for p in (sd(OTHER, ace(ALLOW, 0, FILE_ALL, EVERYONE)), sd(OTHER, ace(ALLOW, CI, FILE_ALL, EVERYONE))):
        dflt = inherit(p, False, None, ALICE.user, ALICE.primary_group)
        assert _aces(dflt) == [(ALLOW, 0, FILE_ALL, ALICE.user), (ALLOW, 0, FILE_ALL, SYSTEM)]
    # a parent without a stored descriptor and no creator: nothing to store (the default)
    assert inherit(None, True, None, ALICE.user, ALICE.primary_group) is None
    # a creator descriptor without a DACL over nothing inheritable: Everyone full, as the default
    o = inherit(None, False, Descriptor.parse(sd_bytes(OTHER, None, present=False)), ALICE.user, ALICE.primary_group)
    assert o.owner == OTHER and _aces(o) == [(ALLOW, 0, FILE_ALL, EVERYONE)]


# ---------------------------------------------------------------- the object store
def mk(store, share, name, token, access=FILE_ALL, disposition=D.FILE_OPEN_IF, options=0, sd=None):
    return store.create(share, name, desired_access=access, share_access=SHARE_ALL, create_disposition=disposition,
                        create_options=options, security_descriptor=sd, token=token)


def test_store_checks_existing_new_and_delete_child(store, share, root):
    d = mk(store, share, "d", ALICE, options=0x1, disposition=D.FILE_CREATE).open
    owner = Descriptor.parse(store.get_security(d, 1)).owner
    assert owner == ALICE.user  # the creating user owns it
    assert os.getxattr(root / "d", "user.wsd.owner") == ALICE.user
    # the directory: the owner may list and add files, not subdirectories, nothing deletes children
    store.set_security(d, 4, sd_bytes(None, acl(ace(ALLOW, OI, READ | FILE_WRITE_DATA | DELETE, owner))))
    store.close(d)
    f = mk(store, share, "d\\f", ALICE, disposition=D.FILE_CREATE).open  # FILE_ADD_FILE: allowed
    assert f.granted_access == FILE_ALL  # a new file: what was asked
    store.close(f)
    assert status_of(mk, store, share, "d\\sub", ALICE, options=0x1, disposition=D.FILE_CREATE) == STATUS_ACCESS_DENIED
    assert not (root / "d" / "sub").exists()
    assert status_of(mk, store, share, "d\\g", BOB, disposition=D.FILE_CREATE) == STATUS_ACCESS_DENIED
    # the file inherited READ | WRITE_DATA | DELETE for alice
    assert status_of(mk, store, share, "d\\f", ALICE, access=0x100) == STATUS_ACCESS_DENIED  # WRITE_ATTRIBUTES
    m = mk(store, share, "d\\f", ALICE, access=MAXIMUM_ALLOWED).open
    assert m.granted_access == READ | FILE_WRITE_DATA | DELETE | WRITE_DAC and m.maximal_access == m.granted_access
    store.close(m)
    # take DELETE away from the file: DELETE now needs FILE_DELETE_CHILD on the directory
    fo = mk(store, share, "d\\f", ALICE, access=WRITE_DAC).open
    store.set_security(fo, 4, sd_bytes(None, acl(ace(ALLOW, 0, READ, owner))))
    store.close(fo)
    assert status_of(mk, store, share, "d\\f", ALICE, access=DELETE) == STATUS_ACCESS_DENIED
    assert status_of(mk, store, share, "d\\f", ALICE, access=MAXIMUM_ALLOWED, options=0x1000) == STATUS_ACCESS_DENIED
    assert status_of(mk, store, share, "d\\f", ALICE, access=1, disposition=D.FILE_OVERWRITE_IF) \
        == STATUS_ACCESS_DENIED  # overwriting needs FILE_WRITE_DATA
    d = mk(store, share, "d", ALICE, access=WRITE_DAC, options=0x1).open
    store.set_security(d, 4, sd_bytes(None, acl(ace(ALLOW, 0, READ | FILE_DELETE_CHILD, owner))))
    store.close(d)
    doc = mk(store, share, "d\\f", ALICE, access=DELETE, options=0x1000).open  # FILE_DELETE_CHILD
    store.close(doc)
    assert not (root / "d" / "f").exists()


def test_store_no_descriptor_behaves_as_before_and_is_cached(store, share, root):
    (root / "plain").write_bytes(b"x")
    o = mk(store, share, "plain", BOB, access=MAXIMUM_ALLOWED).open
    assert o.granted_access == FILE_ALL and o.maximal_access is None
    st = os.stat(root / "plain")
    assert store._sd_cache[(st.st_dev, st.st_ino)] == (st.st_ctime_ns, None)
    # a descriptor set through the store is seen at once, whatever the ctime granularity
    store.set_security(o, 4, sd_bytes(None, acl(ace(ALLOW, 0, READ, EVERYONE))))
    assert status_of(mk, store, share, "plain", BOB, access=FILE_WRITE_DATA) == STATUS_ACCESS_DENIED
    store.close(o)
    # without a token (the store used on its own) nothing is checked
    store.close(store.create(share, "plain", desired_access=FILE_WRITE_DATA, share_access=SHARE_ALL,
                             create_disposition=D.FILE_OPEN).open)


def test_store_secd_context_and_rename_target(store, share, root):
    # a SecD create context: stored as given, owner from it
    given = sd_bytes(OTHER, acl(ace(ALLOW, 0, READ, ALICE.user)))
    # only an admin may name another owner (STATUS_INVALID_OWNER), before anything is created
    assert status_of(mk, store, share, "s", ALICE, disposition=D.FILE_CREATE, sd=given) == 0xC000005A
    assert not (root / "s").exists()
    o = mk(store, share, "s", ADMIN, disposition=D.FILE_CREATE, sd=given).open
    got = Descriptor.parse(store.get_security(o, 5))
    assert got.owner == OTHER and _aces(got) == [(ALLOW, 0, READ, ALICE.user)]
    store.close(o)
    mine = mk(store, share, "mine", ALICE, access=0xC0000, disposition=D.FILE_CREATE).open  # WRITE_DAC|WRITE_OWNER
    assert status_of(store.set_security, mine, 1, sd_bytes(OTHER, None, present=False)) == 0xC000005A
    store.set_security(mine, 1, sd_bytes(ALICE.user, None, present=False))  # itself: fine
    store.close(mine)
    assert status_of(mk, store, share, "s", ALICE, access=FILE_WRITE_DATA) == STATUS_ACCESS_DENIED
    # rename into a directory that denies FILE_ADD_FILE
    t = mk(store, share, "t", ALICE, options=0x1, disposition=D.FILE_CREATE).open
    store.set_security(t, 4, sd_bytes(None, acl(ace(ALLOW, 0, READ | FILE_ADD_SUBDIRECTORY, EVERYONE))))
    store.close(t)
    r = mk(store, share, "r", ALICE, access=DELETE, disposition=D.FILE_CREATE).open
    assert status_of(store.rename, r, "t\\r", False) == STATUS_ACCESS_DENIED
    store.rename(r, "r2", False)  # the share root has no descriptor
    store.close(r)
    assert (root / "r2").exists() and not (root / "t" / "r").exists()
