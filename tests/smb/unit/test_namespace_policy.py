"""Namespace policy of a share (store/namepolicy.py): hide_files / veto_files patterns in
both syntaxes, their configuration, and what real clients see -- smbprotocol against an
in-process wsd-smbd: a vetoed name cannot be opened (OBJECT_NAME_NOT_FOUND, or
OBJECT_PATH_NOT_FOUND for a directory on the way), created or be a rename target, and is
not listed; hide_files / dot files carry FILE_ATTRIBUTE_HIDDEN; a hide_unreadable share
answers SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM (MS-SMB2 2.2.10) and QUERY_DIRECTORY
leaves out a file whose DACL denies the user read access (MS-SMB2 3.3.5.18)."""
from __future__ import annotations

import os
import struct

import pytest
from smbunit import ServerThread, make_config

from wsd_smb.core.state import Share
from wsd_smb.server.config import ConfigError, load
from wsd_smb.store.namepolicy import NamePatterns, PatternError, check_veto, parse_patterns
from wsd_smb.ntstatus import NtStatusError

import secdesc
from smbpclient import FILE_ALL, SmbpClient

from smbprotocol.exceptions import SMBResponseException
from smbprotocol.file_info import FileInformationClass
from smbprotocol.open import CreateDisposition, CreateOptions, SMB2SetInfoRequest
from smbprotocol.tree import SMB2TreeConnectRequest, SMB2TreeConnectResponse

STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
STATUS_DIRECTORY_NOT_EMPTY = 0xC0000101
SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM = 0x00000800
HIDDEN = 0x2
READ_CONTROL, WRITE_DAC, DELETE = 0x20000, 0x40000, 0x10000
READ_DATA, READ_EA, READ_ATTRIBUTES = 0x1, 0x8, 0x80
DIR = CreateOptions.FILE_DIRECTORY_FILE


# ------------------------------------------------------------------ patterns
@pytest.mark.parametrize("value,want", [
    (["*.tmp", "desktop.ini"], ("*.tmp", "desktop.ini")),
    ("/*.tmp/desktop.ini/", ("*.tmp", "desktop.ini")),
    ("*.tmp/desktop.ini", ("*.tmp", "desktop.ini")),  # Samba: the outer slashes may be left out
    ("//a b//c?//", ("a b", "c?")),  # empty items skipped, spaces belong to the name
    ("", ()), ([], ()), ("/", ()),
    (["x", "x", ""], ("x",)),
])
def test_parse_patterns_both_syntaxes(value, want):
    assert parse_patterns(value) == want


@pytest.mark.parametrize("value", [["a/b"], [3], 5, {"a": 1}, ["a\0"], "/a\0/"])
def test_parse_patterns_refuses(value):
    with pytest.raises(PatternError):
        parse_patterns(value)


def test_pattern_matching_last_component_case_insensitive():
    p = NamePatterns.compile(parse_patterns("/*.tmp/desktop.ini/se?ret/"))
    for name in ("a.tmp", "A.TMP", ".tmp", "x.y.Tmp", "Desktop.INI", "secret", "SEZRET", "seÄret"):
        assert p.match(name), name
    for name in ("a.tmpx", "tmp", "desktop.ini.bak", "xdesktop.ini", "seret", "secrets", "se\nret2"):
        assert not p.match(name), name
    assert p.match("se\nret")  # '?' is any one character, a newline too
    # regex metacharacters are literal
    q = NamePatterns.compile(["a+b(1).[x]", "^$|"])
    assert q.match("A+B(1).[X]") and q.match("^$|") and not q.match("aab(1).x") and not q.match("")
    # Unicode case-insensitively, as Samba's strcasecmp_m
    assert NamePatterns.compile(["ÄRGER*"]).match("ärger.txt")
    assert NamePatterns.compile(["abc"], case_sensitive=True).match("abc")
    assert not NamePatterns.compile(["abc"], case_sensitive=True).match("ABC")


def test_match_any_agrees_with_per_component_match():
    """The one-search check over a joined path (what CREATE uses) says the same as matching
    each component: random names over an alphabet with the wildcard and separator-like
    characters, bounded count."""
    import random

    p = NamePatterns.compile(["*.vet", "se?ret", "a b", "x*y*z", "?"])
    rnd = random.Random(7)
    alpha = "abxyz.vetsr \\?*:"
    hits = 0
    for _ in range(5000):
        parts = ["".join(rnd.choice(alpha) for _ in range(rnd.randint(1, 6))) for _ in range(rnd.randint(0, 4))]
        want = any(p.match(c) for c in parts)
        assert p.match_any(parts) == want, parts
        hits += want
    assert 500 < hits < 4500  # both outcomes were exercised


def test_empty_pattern_list_compiles_to_none():
    assert NamePatterns.compile(()) is None and NamePatterns.compile(parse_patterns("//")) is None


def test_check_veto_statuses():
    v = NamePatterns.compile(["*.vet", "private"])
    check_veto(v, ["a", "b.txt"])  # nothing vetoed: no error
    check_veto(v, [])
    for parts, status in ((["x.vet"], STATUS_OBJECT_NAME_NOT_FOUND),
                          (["dir", "Private"], STATUS_OBJECT_NAME_NOT_FOUND),
                          (["private", "x"], STATUS_OBJECT_PATH_NOT_FOUND),
                          (["a", "B.VET", "c"], STATUS_OBJECT_PATH_NOT_FOUND)):
        with pytest.raises(NtStatusError) as ei:
            check_veto(v, parts)
        assert ei.value.status == status, parts


# ------------------------------------------------------------------ configuration
def _load(tmp_path, share_lines: str):
    d = tmp_path / "d"
    d.mkdir(exist_ok=True)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[[share]]\nname = "s"\npath = "{d}"\n{share_lines}\n'
                    '[[user]]\nname = "u"\npassword = "p"\n')
    return load(str(conf)).server.shares["S"]


def test_config_namespace_keys(tmp_path):
    sh = _load(tmp_path, 'hide_files = ["*.tmp", "desktop.ini"]\nveto_files = "/.git/*.bak/"\n'
                         'delete_veto_files = true\nhide_dot_files = false\nhide_unreadable = true')
    assert sh.hide_files == ("*.tmp", "desktop.ini") and sh.veto_files == (".git", "*.bak")
    assert sh.delete_veto_files and not sh.hide_dot_files and sh.do_access_based_directory_enumeration
    dflt = _load(tmp_path, "")  # Samba's defaults
    assert (dflt.hide_files, dflt.veto_files, dflt.delete_veto_files, dflt.hide_dot_files,
            dflt.do_access_based_directory_enumeration) == ((), (), False, True, False)


@pytest.mark.parametrize("line", ['hide_files = 3', 'veto_files = ["a/b"]', 'hide_unreadable = "yes"',
                                  'delete_veto_files = 1', 'hide_dot_files = "no"'])
def test_config_namespace_keys_refused(tmp_path, line):
    with pytest.raises(ConfigError):
        _load(tmp_path, line)


# ------------------------------------------------------------------ real clients
@pytest.fixture
def nsd(tmp_path):
    """wsd-smbd with the plain share `share`, a share `ns` (hide/veto patterns,
    delete_veto_files) and a share `hideunread` (access-based enumeration)."""
    cfg = make_config(tmp_path)
    for name, kw in (("ns", dict(hide_files=("*.tmp", "desktop.ini"), veto_files=("*.vet", "private"),
                                 delete_veto_files=True)),
                     ("nokeep", dict(veto_files=("*.vet",))),
                     ("hideunread", dict(do_access_based_directory_enumeration=True))):
        (tmp_path / name).mkdir()
        cfg.add_share(Share(name, str(tmp_path / name), **kw))
    st = ServerThread(cfg)
    yield st
    st.stop()


class Client(SmbpClient):
    def listing(self, dirname="") -> dict[str, int]:
        """name -> FileAttributes of a QUERY_DIRECTORY "*" (all entries)."""
        d = self.open(dirname, 0x1 | 0x80, options=DIR)
        try:
            out = {}
            for e in d.query_directory("*", FileInformationClass.FILE_DIRECTORY_INFORMATION):
                out[e["file_name"].get_value().decode("utf-16-le")] = e["file_attributes"].get_value()
            return out
        finally:
            d.close()

    def set_dacl(self, o, sd):
        self.set_sd(o, 0x4, sd)  # DACL_SECURITY_INFORMATION

    def owner(self, o) -> bytes:
        buf = self.query(o, 3, 0, 0x1)  # OWNER_SECURITY_INFORMATION
        off = struct.unpack_from("<I", buf, 4)[0]
        return bytes(buf[off:off + 8 + 4 * buf[off + 1]])

    def attributes(self, o) -> int:
        return struct.unpack_from("<I", self.query(o, 1, 4), 32)[0]  # FileBasicInformation

    def tree_flags(self, share: str) -> int:
        req = SMB2TreeConnectRequest()
        req["buffer"] = rf"\\{self.conn.server_name}\{share}".encode("utf-16-le")
        resp = self.conn.receive(self.conn.send(req, self.session.session_id))
        tr = SMB2TreeConnectResponse()
        tr.unpack(resp["data"].get_value())
        return tr["share_flags"].get_value()

    def close(self):
        self.conn.disconnect(True)


def dacl_sd(*aces):
    """A descriptor whose DACL has one ACE (no inheritance flags) per (type, mask, SID)."""
    return secdesc.dacl_sd(*(secdesc.ace(kind, 0, mask, sid) for kind, mask, sid in aces))


def test_vetoed_names_cannot_be_opened_created_or_listed(nsd, tmp_path):
    root = tmp_path / "ns"
    (root / "old.vet").write_bytes(b"v")
    (root / "private").mkdir()
    (root / "private" / "inner.txt").write_bytes(b"i")
    (root / "plain.txt").write_bytes(b"p")
    c = Client(nsd, "ns")
    try:
        assert c.status("old.vet") == STATUS_OBJECT_NAME_NOT_FOUND
        assert c.status("OLD.VET") == STATUS_OBJECT_NAME_NOT_FOUND  # case-insensitively
        assert c.status("private", options=DIR) == STATUS_OBJECT_NAME_NOT_FOUND
        assert c.status("private\\inner.txt") == STATUS_OBJECT_PATH_NOT_FOUND
        assert c.status("new.vet", disposition=CreateDisposition.FILE_CREATE) == STATUS_OBJECT_NAME_NOT_FOUND
        assert c.status("old.vet:stream", disposition=CreateDisposition.FILE_OPEN_IF) \
            == STATUS_OBJECT_NAME_NOT_FOUND
        assert not (root / "new.vet").exists()
        assert set(c.listing()) == {".", "..", "plain.txt"}
        # a rename onto a vetoed name is refused, the file stays
        o = c.open("plain.txt", FILE_ALL)
        try:
            with pytest.raises(SMBResponseException) as ei:
                _rename(c, o, "moved.vet")
            assert ei.value.status == STATUS_OBJECT_NAME_NOT_FOUND
        finally:
            o.close()
        assert (root / "plain.txt").exists() and not (root / "moved.vet").exists()
        assert c.status("plain.txt") == 0
    finally:
        c.close()


def _rename(c, o, new_name):
    """SET_INFO FileRenameInformation (MS-FSCC 2.4.42.2) of *o* to *new_name*."""
    name = new_name.encode("utf-16-le")
    buf = struct.pack("<B7xQI", 0, 0, len(name)) + name
    req = SMB2SetInfoRequest()
    req["info_type"] = 1
    req["file_info_class"] = 10  # FileRenameInformation
    req["file_id"] = o.file_id
    req["buffer"] = buf
    c.send(req)


def test_hide_files_and_dot_files_are_hidden(nsd, tmp_path):
    root = tmp_path / "ns"
    for n in ("a.tmp", "Desktop.ini", ".dot", "plain.txt"):
        (root / n).write_bytes(b"x")
    c = Client(nsd, "ns")
    try:
        entries = c.listing()
        hidden = {n for n, a in entries.items() if a & HIDDEN}
        assert hidden == {"a.tmp", "Desktop.ini", ".dot"}, entries
        # QUERY_INFO and the CREATE response report it too
        o = c.open("a.tmp", 0x80)
        assert o.file_attributes & HIDDEN and c.attributes(o) & HIDDEN
        o.close()
        p = c.open("plain.txt", 0x80)
        assert not c.attributes(p) & HIDDEN and not p.file_attributes & HIDDEN
        p.close()
        # a new file whose name matches is created HIDDEN
        n = c.open("new.tmp", FILE_ALL, CreateDisposition.FILE_CREATE)
        assert n.file_attributes & HIDDEN
        n.close()
    finally:
        c.close()
    # on the plain share: no patterns, only the dot file is hidden (hide_dot_files defaults to true)
    for n in ("a.tmp", ".dot"):
        (tmp_path / "share" / n).write_bytes(b"x")
    p = Client(nsd, "share")
    try:
        entries = p.listing()
        assert entries["a.tmp"] & HIDDEN == 0 and entries[".dot"] & HIDDEN
        assert not entries["."] & HIDDEN and not entries[".."] & HIDDEN
    finally:
        p.close()


def test_rmdir_with_only_vetoed_names(nsd, tmp_path):
    for share, removed in (("ns", True), ("nokeep", False)):
        root = tmp_path / share
        d = root / "d"
        d.mkdir()
        (d / "x.vet").write_bytes(b"x")
        if share == "ns":
            (d / "sub.vet").mkdir()  # a vetoed directory goes with all it holds
            (d / "sub.vet" / "deep.txt").write_bytes(b"y")
            (d / "sub.vet" / "link").symlink_to("/etc")
        c = Client(nsd, share)
        try:
            o = c.open("d", DELETE | 0x80, options=DIR)
            req = SMB2SetInfoRequest()
            req["info_type"] = 1
            req["file_info_class"] = 13  # FileDispositionInformation
            req["file_id"] = o.file_id
            req["buffer"] = b"\x01"
            if removed:
                c.send(req)
                o.close()
                assert not d.exists()
            else:
                with pytest.raises(SMBResponseException) as ei:
                    c.send(req)
                assert ei.value.status == STATUS_DIRECTORY_NOT_EMPTY
                o.close()
                assert (d / "x.vet").exists()
            # a directory with a visible name is never emptied
            e = root / "e"
            e.mkdir()
            (e / "x.vet").write_bytes(b"x")
            (e / "keep.txt").write_bytes(b"k")
            o = c.open("e", DELETE | 0x80, options=DIR)
            req["file_id"] = o.file_id
            with pytest.raises(SMBResponseException) as ei:
                c.send(req)
            assert ei.value.status == STATUS_DIRECTORY_NOT_EMPTY
            o.close()
            assert (e / "x.vet").exists() and (e / "keep.txt").exists()
        finally:
            c.close()
    assert os.path.isdir("/etc")  # the symlink was removed, not followed


def test_delete_on_close_directory_with_vetoed_names(nsd, tmp_path):
    d = tmp_path / "ns" / "doc"
    d.mkdir()
    (d / "y.vet").write_bytes(b"y")
    c = Client(nsd, "ns")
    try:
        o = c.open("doc", DELETE | 0x80, options=DIR | CreateOptions.FILE_DELETE_ON_CLOSE)
        o.close()
    finally:
        c.close()
    assert not d.exists()


def test_access_based_enumeration(nsd, tmp_path):
    c = Client(nsd, "hideunread")
    try:
        assert c.tree_flags("hideunread") & SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM
        assert not c.tree_flags("share") & SMB2_SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM
        (tmp_path / "hideunread" / "nosd.txt").write_bytes(b"n")  # no stored descriptor: visible
        f = c.open("f.txt", READ_CONTROL | WRITE_DAC, CreateDisposition.FILE_CREATE)
        me = c.owner(f)
        full = READ_CONTROL | READ_DATA | READ_ATTRIBUTES | READ_EA
        seen = {}
        for label, mask in (("full", full), ("no-ea", full & ~READ_EA), ("no-attr", full & ~READ_ATTRIBUTES),
                            ("no-data", full & ~READ_DATA)):
            c.set_dacl(f, dacl_sd((0, mask | 0x100000, me)))
            seen[label] = set(c.listing())
        assert seen["full"] == {".", "..", "f.txt", "nosd.txt"}
        for label in ("no-ea", "no-attr", "no-data"):
            assert seen[label] == {".", "..", "nosd.txt"}, label
        # a deny ACE for the user before the allow: hidden too
        c.set_dacl(f, dacl_sd((1, READ_DATA, me), (0, FILE_ALL, me)))
        assert "f.txt" not in c.listing()
        # a directory the user may not list is hidden the same way
        d = c.open("sub", READ_CONTROL | WRITE_DAC, CreateDisposition.FILE_CREATE, DIR)
        c.set_dacl(d, dacl_sd((0, READ_CONTROL | WRITE_DAC, me)))
        d.close()
        assert "sub" not in c.listing()
        c.set_dacl(f, dacl_sd((0, FILE_ALL, me)))
        f.close()
        assert set(c.listing()) == {".", "..", "f.txt", "nosd.txt"}
    finally:
        c.close()
    # the same DACL on a share without access-based enumeration: listed
    p = Client(nsd, "share")
    try:
        f = p.open("g.txt", READ_CONTROL | WRITE_DAC, CreateDisposition.FILE_CREATE)
        p.set_dacl(f, dacl_sd((0, READ_CONTROL | WRITE_DAC, p.owner(f))))
        f.close()
        assert "g.txt" in p.listing()
    finally:
        p.close()


def test_reload_applies_changed_namespace_options(nsd, tmp_path):
    root = tmp_path / "ns"
    (root / "a.tmp").write_bytes(b"a")
    (root / "b.log").write_bytes(b"b")
    c = Client(nsd, "ns")
    try:
        before = c.listing()
    finally:
        c.close()
    assert before["a.tmp"] & HIDDEN and not before["b.log"] & HIDDEN
    new = make_config(tmp_path)
    for name, kw in (("ns", dict(hide_files=("*.log",), veto_files=("*.vet", "private"), delete_veto_files=True)),
                     ("nokeep", dict(veto_files=("*.vet",))),
                     ("hideunread", dict(do_access_based_directory_enumeration=True))):
        new.add_share(Share(name, str(tmp_path / name), **kw))
    changes = nsd.call(nsd.server.reload, new)
    assert changes["changed"] == ["ns"], changes
    c = Client(nsd, "ns")  # a new tree connect gets the new settings
    try:
        after = c.listing()
    finally:
        c.close()
    assert not after["a.tmp"] & HIDDEN and after["b.log"] & HIDDEN


def test_srvsvc_share_flags_show_access_based_enumeration(nsd):
    """MS-SRVS 2.2.4.29: shi1005_flags carries SHI1005_FLAGS_ACCESS_BASED_DIRECTORY_ENUM."""
    pytest.importorskip("impacket")
    from test_rpc_srvs import Rpc, share_get_info

    r = Rpc(nsd)
    try:
        (_, si), status = share_get_info(r, "hideunread", 1005)
        assert status == 0 and si == {"shi1005_flags": 0x800}
        (_, si), status = share_get_info(r, "ns", 1005)
        assert status == 0 and si == {"shi1005_flags": 0}
    finally:
        r.close()
