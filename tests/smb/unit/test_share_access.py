"""Per-share access policy (core/shareaccess.py, server/config.py:_share_access_options):
valid/invalid users, read/write lists, guest_ok, max_connections (MS-SMB2 3.3.5.7),
csc_policy (ShareFlags, MS-SMB2 2.2.10; shi1005_flags, MS-SRVS 2.2.4.29), browseable and
access-based share enumeration (NetrShareEnum, MS-SRVS 3.1.4.8).

The configuration cases parse real TOML files; the protocol cases drive an in-process
wsd-smbd over loopback with the raw client (responses decoded by smbprotocol's own
structures where it has one) and with smbprotocol's Open for reads and writes."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from rawclient import RawClient, open_file
from smbunit import PASSWORD, USER, ServerThread, make_config

from wsd_smb import ntstatus
from wsd_smb.core.state import Share
from wsd_smb.server.config import ConfigError, load
from wsd_smb.wire import commands as w
from wsd_smb.wire.header import Command

pytest.importorskip("smbprotocol", reason="smbprotocol is not installed")
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import CreateDisposition, CreateOptions, FileAttributes, ImpersonationLevel, Open  # noqa: E402
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import SMB2TreeConnectResponse, TreeConnect  # noqa: E402

BOB, BOBPW = "bob", "bobpw"  # smbunit.make_config's non-administrator
FULL = 0x001F01FF  # FILE_ALL_ACCESS
READ_ONLY = 0x001200A9  # FILE_GENERIC_READ | FILE_GENERIC_EXECUTE
GENERIC_READ, GENERIC_WRITE, DELETE = 0x80000000, 0x40000000, 0x00010000
SHARE_ALL = 7


# ====================================================================== configuration
def _load(tmp_path: Path, share_toml: str) -> Share:
    d = tmp_path / "d"
    d.mkdir(exist_ok=True)
    conf = tmp_path / "wsd.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n\n[[share]]\nname = "s"\npath = "{d}"\n'
                    + share_toml + '\n[[user]]\nname = "u"\npassword = "p"\n')
    return load(str(conf)).server.shares["S"]


def test_config_defaults(tmp_path):
    s = _load(tmp_path, "")
    assert (s.valid_users, s.invalid_users, s.read_list, s.write_list) == (frozenset(),) * 4
    assert (s.guest_ok, s.browseable, s.access_based_share_enum) == (False, True, False)
    assert s.max_uses == 0xFFFFFFFF and s.csc_flags == 0 and s.remark == ""


def test_config_every_access_key(tmp_path):
    s = _load(tmp_path, 'valid_users = ["Alice", "BOB"]\ninvalid_users = "mallory"\nread_list = ["bob"]\n'
                        'write_list = ["Carol"]\nguest_ok = true\nbrowseable = false\n'
                        'access_based_share_enum = true\nmax_connections = 3\ncsc_policy = "programs"\n'
                        'comment = "from samba"\nread_only = true\n')
    assert s.valid_users == {"alice", "bob"} and s.invalid_users == {"mallory"}
    assert s.read_list == {"bob"} and s.write_list == {"carol"}
    assert s.guest_ok and not s.browseable and s.access_based_share_enum and s.read_only
    assert s.max_uses == 3 and s.csc_flags == 0x20 and s.remark == "from samba"


@pytest.mark.parametrize("policy,flags", [("manual", 0x00), ("documents", 0x10), ("programs", 0x20),
                                          ("disable", 0x30)])
def test_config_csc_policy(tmp_path, policy, flags):
    assert _load(tmp_path, f'csc_policy = "{policy}"\n').csc_flags == flags


def test_config_namespace_keys_are_known(tmp_path):
    """The namespace options (store/namepolicy.py) are known keys and parsed next to the
    access policy, in both pattern syntaxes."""
    s = _load(tmp_path, 'hide_files = "/x*/desktop.ini/"\nveto_files = ["y?", "*.tmp"]\nhide_dot_files = false\n'
                        'hide_unreadable = true\ndelete_veto_files = true\nvalid_users = ["u"]\n')
    assert list(s.hide_files) == ["x*", "desktop.ini"] and list(s.veto_files) == ["y?", "*.tmp"]
    assert not s.hide_dot_files and s.do_access_based_directory_enumeration and s.delete_veto_files
    assert s.valid_users == {"u"}


@pytest.mark.parametrize("toml,words", [
    ('valid_user = ["bob"]\n', ["unknown key", "valid_user"]),
    ('read_onyl = true\nbrowsable = false\n', ["unknown keys", "browsable", "read_onyl"]),
    ('csc_policy = "auto"\n', ["csc_policy", "auto"]),
    ('max_connections = -1\n', ["max_connections"]),
    ('max_connections = "3"\n', ["max_connections"]),
    ('max_connections = true\n', ["max_connections"]),
    ('valid_users = [1]\n', ["valid_users"]),
    ('write_list = [""]\n', ["write_list"]),
    ('valid_users = ["alice", "@staff"]\n', ["valid_users", "@staff", "groups"]),
    ('guest_ok = "yes"\n', ["guest_ok"]),
    ('browseable = 0\n', ["browseable"]),
    ('remark = "a"\ncomment = "b"\n', ["remark", "comment"]),
])
def test_config_errors_name_the_key(tmp_path, toml, words):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, toml)
    assert all(word in str(e.value) for word in words), str(e.value)


# ====================================================================== a server with policies
@pytest.fixture
def srv(tmp_path):
    """make_config's server plus shares with policies (each its own directory)."""
    started = []

    def start(*shares: Share, **kw) -> ServerThread:
        cfg = make_config(tmp_path, **kw)
        for sh in shares:
            Path(sh.local_path).mkdir(exist_ok=True)
            cfg.add_share(sh)
        st = ServerThread(cfg)
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


def _logon(st, user=USER, password=PASSWORD) -> RawClient:
    c = RawClient(st.host, st.port)
    c.negotiate(dialects=(0x0311,))
    assert c.session_setup(user, password).status == 0
    return c


def _tree(c: RawClient, share: str):
    """(status, smbprotocol's decoding of the TREE_CONNECT response or None, TreeId)."""
    r = c.tree_connect(share)
    if r.status != 0:
        return r.status, None, 0
    body = SMB2TreeConnectResponse()
    body.unpack(r.body)
    return 0, body, r.header.tree_id


def test_valid_and_invalid_users(srv, tmp_path):
    st = srv(Share("only", str(tmp_path / "only"), valid_users=frozenset({USER.lower()})),
             Share("notbob", str(tmp_path / "notbob"), invalid_users=frozenset({"bob"})),
             Share("both", str(tmp_path / "both"), valid_users=frozenset({"bob"}), invalid_users=frozenset({"bob"})))
    me, bob = _logon(st), _logon(st, BOB, BOBPW)
    assert _tree(me, "only")[0] == 0
    assert _tree(bob, "only")[0] == ntstatus.STATUS_ACCESS_DENIED
    assert _tree(me, "notbob")[0] == 0
    assert _tree(bob, "notbob")[0] == ntstatus.STATUS_ACCESS_DENIED
    assert _tree(bob, "both")[0] == ntstatus.STATUS_ACCESS_DENIED  # invalid_users wins
    assert _tree(bob, "IPC$")[0] == 0 and _tree(bob, "share")[0] == 0
    assert st.call(lambda: st.server.config.share("only").current_uses) == 1  # the refusal took no use
    me.close()
    bob.close()


def test_guest_sessions_need_guest_ok(srv, tmp_path):
    st = srv(Share("public", str(tmp_path / "public"), guest_ok=True), allow_guest=True, signing_required=False)
    g = RawClient(st.host, st.port)
    g.negotiate(dialects=(0x0302,))
    assert g.session_setup("stranger", "pw").status == 0 and g.session_flags & w.SMB2_SESSION_FLAG_IS_GUEST
    g.sign = False
    assert _tree(g, "share")[0] == ntstatus.STATUS_ACCESS_DENIED
    assert _tree(g, "public")[0] == 0
    assert _tree(g, "IPC$")[0] == 0
    g.close()
    me = _logon(st)  # a real user is not a guest: guest_ok is no restriction for it
    assert _tree(me, "share")[0] == 0 and _tree(me, "public")[0] == 0
    me.close()


def test_max_connections(srv, tmp_path):
    st = srv(Share("one", str(tmp_path / "one"), max_uses=1))
    a, b = _logon(st), _logon(st, BOB, BOBPW)
    status, _, tid = _tree(a, "one")
    assert status == 0
    assert _tree(b, "one")[0] == ntstatus.STATUS_REQUEST_NOT_ACCEPTED
    assert _tree(a, "one")[0] == ntstatus.STATUS_REQUEST_NOT_ACCEPTED  # the same session counts too
    assert a.request(Command.SMB2_TREE_DISCONNECT, w.TreeDisconnectRequest(), tree_id=tid).status == 0
    assert _tree(b, "one")[0] == 0
    a.close()
    b.close()


@pytest.mark.parametrize("policy,flag", [(0x00, "SMB2_SHAREFLAG_MANUAL_CACHING"),
                                         (0x10, "SMB2_SHAREFLAG_AUTO_CACHING"),
                                         (0x20, "SMB2_SHAREFLAG_VDO_CACHING"),
                                         (0x30, "SMB2_SHAREFLAG_NO_CACHING")])
def test_csc_policy_in_share_flags(srv, tmp_path, policy, flag):
    from smbprotocol.tree import ShareFlags

    st = srv(Share("c", str(tmp_path / "c"), csc_flags=policy, encrypt_data=True))
    c = _logon(st)
    status, body, _ = _tree(c, "c")
    flags = body["share_flags"].get_value()
    assert status == 0 and flags & 0x30 == getattr(ShareFlags, flag) == policy
    assert flags & 0x8000  # SMB2_SHAREFLAG_ENCRYPT_DATA still there
    assert _tree(c, "share")[1]["share_flags"].get_value() == 0  # the default: manual, as Samba and Windows
    c.close()


def test_maximal_access_per_user(srv, tmp_path):
    st = srv(Share("rw", str(tmp_path / "rw"), read_list=frozenset({"bob"})),
             Share("ro", str(tmp_path / "ro"), read_only=True, write_list=frozenset({"bob"})),
             Share("both", str(tmp_path / "both"), read_list=frozenset({"bob"}), write_list=frozenset({"bob"})))
    me, bob = _logon(st), _logon(st, BOB, BOBPW)
    access = lambda c, s: _tree(c, s)[1]["maximal_access"].get_value()  # noqa: E731
    assert access(me, "rw") == FULL and access(bob, "rw") == READ_ONLY
    assert access(me, "ro") == READ_ONLY and access(bob, "ro") == FULL
    assert access(bob, "both") == FULL  # write_list wins (Samba's order)
    me.close()
    bob.close()


def _sp(st, user, password, share):
    conn = Connection(uuid.uuid4(), st.host, st.port, require_signing=True)
    conn.connect(timeout=10)
    sess = Session(conn, user, password, require_encryption=False)
    sess.connect()
    tree = TreeConnect(sess, rf"\\{st.host}\{share}")
    tree.connect()
    return conn, tree


def _open(tree, name, access, disposition, options=CreateOptions.FILE_NON_DIRECTORY_FILE):
    o = Open(tree, name)
    o.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL, SHARE_ALL,
             disposition, options)
    return o


def _denied(fn) -> bool:
    try:
        o = fn()
    except SMBResponseException as e:
        return e.status == ntstatus.STATUS_ACCESS_DENIED
    o.close()
    return False


def test_read_list_tree_refuses_writes_write_list_tree_allows(srv, tmp_path):
    st = srv(Share("rw", str(tmp_path / "rw"), read_list=frozenset({"bob"})),
             Share("ro", str(tmp_path / "ro"), read_only=True, write_list=frozenset({"bob"})))
    (tmp_path / "rw" / "f.txt").write_bytes(b"hello")
    (tmp_path / "rw" / "sub").mkdir()
    conns = []
    try:
        c, bob_rw = _sp(st, BOB, BOBPW, "rw")
        conns.append(c)
        # reading through the read-only tree works
        o = _open(bob_rw, "f.txt", GENERIC_READ, CreateDisposition.FILE_OPEN)
        assert o.read(0, 5) == b"hello"
        o.close()
        # every way of modifying through it is refused with STATUS_ACCESS_DENIED
        assert _denied(lambda: _open(bob_rw, "f.txt", GENERIC_WRITE, CreateDisposition.FILE_OPEN))
        assert _denied(lambda: _open(bob_rw, "new.txt", GENERIC_READ, CreateDisposition.FILE_CREATE))
        assert _denied(lambda: _open(bob_rw, "f.txt", GENERIC_READ, CreateDisposition.FILE_OVERWRITE_IF))
        assert _denied(lambda: _open(bob_rw, "f.txt", GENERIC_READ, CreateDisposition.FILE_SUPERSEDE))
        assert _denied(lambda: _open(bob_rw, "f.txt", DELETE, CreateDisposition.FILE_OPEN,
                                     CreateOptions.FILE_NON_DIRECTORY_FILE | CreateOptions.FILE_DELETE_ON_CLOSE))
        assert _denied(lambda: _open(bob_rw, "newdir", GENERIC_READ, CreateDisposition.FILE_CREATE,
                                     CreateOptions.FILE_DIRECTORY_FILE))
        assert _denied(lambda: _open(bob_rw, "sub", DELETE, CreateDisposition.FILE_OPEN,
                                     CreateOptions.FILE_DIRECTORY_FILE))
        assert (tmp_path / "rw" / "f.txt").read_bytes() == b"hello"
        assert sorted(p.name for p in (tmp_path / "rw").iterdir()) == ["f.txt", "sub"]
        # the same share through the administrator's (writable) tree
        c, me_rw = _sp(st, USER, PASSWORD, "rw")
        conns.append(c)
        o = _open(me_rw, "f.txt", GENERIC_READ | GENERIC_WRITE, CreateDisposition.FILE_OPEN)
        o.write(b"HELLO", 0)
        o.close()
        assert (tmp_path / "rw" / "f.txt").read_bytes() == b"HELLO"
        # a read_only share: bob (write_list) writes, the administrator does not
        c, bob_ro = _sp(st, BOB, BOBPW, "ro")
        conns.append(c)
        o = _open(bob_ro, "made.txt", GENERIC_READ | GENERIC_WRITE, CreateDisposition.FILE_CREATE)
        o.write(b"by bob", 0)
        o.close()
        assert (tmp_path / "ro" / "made.txt").read_bytes() == b"by bob"
        c, me_ro = _sp(st, USER, PASSWORD, "ro")
        conns.append(c)
        assert _denied(lambda: _open(me_ro, "made.txt", GENERIC_WRITE, CreateDisposition.FILE_OPEN))
        assert _denied(lambda: _open(me_ro, "other.txt", GENERIC_READ, CreateDisposition.FILE_CREATE))
    finally:
        for c in conns:
            c.disconnect()


def test_read_only_and_writable_trees_meet_in_share_modes(srv, tmp_path):
    """The two object-store views of one share are one set of files: an open through the
    writable tree that shares nothing keeps the read-only tree's open out."""
    st = srv(Share("rw", str(tmp_path / "rw"), read_list=frozenset({"bob"})))
    (tmp_path / "rw" / "f.txt").write_bytes(b"x")
    me, bob = _logon(st), _logon(st, BOB, BOBPW)
    me_tid, bob_tid = _tree(me, "rw")[2], _tree(bob, "rw")[2]
    status, held, _ = open_file(me, me_tid, "f.txt", share=0, disposition=1)
    assert status == 0
    status, _, _ = open_file(bob, bob_tid, "f.txt", access=0x00120089, disposition=1)
    assert status == ntstatus.STATUS_SHARING_VIOLATION
    me.close()
    bob.close()


def test_reload_applies_the_policy_to_new_tree_connects(srv, tmp_path):
    st = srv(Share("s", str(tmp_path / "s")))
    bob = _logon(st, BOB, BOBPW)
    status, _, before = _tree(bob, "s")
    assert status == 0
    cfg = make_config(tmp_path)
    cfg.add_share(Share("s", str(tmp_path / "s"), invalid_users=frozenset({"bob"}), csc_flags=0x30))
    changes = st.call(lambda: st.server.reload(cfg))
    assert changes["changed"] == ["s"]
    assert _tree(bob, "s")[0] == ntstatus.STATUS_ACCESS_DENIED
    # the tree connect made before keeps working (as a reload in Samba disconnects nobody)
    assert open_file(bob, before, "kept.txt", disposition=2)[0] == 0
    me = _logon(st)
    assert _tree(me, "s")[1]["share_flags"].get_value() == 0x30
    me.close()
    bob.close()


# ====================================================================== srvsvc: browseable, access-based enumeration
def test_share_enum_browseable_and_access_based(srv, tmp_path):
    from test_rpc_srvs import Rpc, share_enum, share_get_info

    st = srv(Share("hidden", str(tmp_path / "hidden"), browseable=False),
             Share("mine", str(tmp_path / "mine"), valid_users=frozenset({USER.lower()}),
                   access_based_share_enum=True, csc_flags=0x10),
             Share("open", str(tmp_path / "open"), valid_users=frozenset({USER.lower()})))
    me, bob = Rpc(st), Rpc(st, BOB, BOBPW)
    try:
        for level in (0, 1, 2, 501, 502, 503):
            info, total, _r, status = share_enum(me, level)
            assert status == 0 and total == 4
            assert {e[f"shi{level}_netname"] for e in info["ShareInfo"][1]["Buffer"]} == {"share", "IPC$", "mine",
                                                                                        "open"}
        info, total, _r, status = share_enum(me, 1, opnum=36)  # NetrShareEnumSticky
        assert status == 0 and {e["shi1_netname"] for e in info["ShareInfo"][1]["Buffer"]} == {"share", "mine",
                                                                                               "open"}
        # bob may not connect to "mine" (access-based: left out) nor to "open" (no ABSE: listed)
        info, total, _r, status = share_enum(bob, 1)
        assert status == 0 and {e["shi1_netname"] for e in info["ShareInfo"][1]["Buffer"]} == {"share", "IPC$",
                                                                                               "open"}
        # a hidden share is still there by name
        (tag, si), status = share_get_info(me, "hidden", 1)
        assert status == 0 and si["shi1_netname"] == "hidden"
        assert share_get_info(me, "mine", 1005)[0][1] == {"shi1005_flags": 0x10}  # CSC_CACHE_AUTO_REINT
        assert share_get_info(me, "share", 1005)[0][1] == {"shi1005_flags": 0}
    finally:
        me.close()
        bob.close()
    c = _logon(st)
    assert _tree(c, "hidden")[0] == 0
    c.close()


def test_durable_reconnect_of_a_writable_open_through_a_read_only_tree(srv, tmp_path):
    """An open with write access, kept on disconnect (MS-SMB2 3.3.5.9.7), cannot be taken
    over through a tree connect that became read-only (a reload put the user in read_list)."""
    from test_durable import client, ctxs, disconnect, dhnc, durable_batch, reconnect_req

    st = srv()
    c, _t, fid = durable_batch(st, "dur.dat")
    disconnect(st, c, fid[0])
    cfg = make_config(tmp_path)
    cfg.shares["SHARE"].read_list = frozenset({USER.lower()})
    assert st.call(lambda: st.server.reload(cfg))["changed"] == ["share"]
    c2, t2 = client(st)
    assert reconnect_req(c2, t2, "dur.dat", ctxs(dhnc(fid)))[0] == ntstatus.STATUS_ACCESS_DENIED
    cfg = make_config(tmp_path)  # writable for everyone again: the same open reconnects
    st.call(lambda: st.server.reload(cfg))
    c3, t3 = client(st)
    assert reconnect_req(c3, t3, "dur.dat", ctxs(dhnc(fid)))[0] == 0
    c2.close()
    c3.close()
