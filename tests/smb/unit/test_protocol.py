"""Core protocol behaviour over real loopback sockets: compounding (related/unrelated,
inheritance, error propagation), async (STATUS_PENDING) + CANCEL, credits/MessageId
window, CreditCharge, SMB1 multi-protocol negotiate, malformed input -> disconnect."""
from __future__ import annotations

import struct
import threading
from contextlib import contextmanager

import pytest
from smbunit import PASSWORD, USER
from rawclient import RawClient, echo

from wsd_smb import ntstatus
from wsd_smb.core.dispatch import DISPATCH, Handler, Response
from wsd_smb.crypto import smbcrypto as cr
from wsd_smb.wire import commands as w
from wsd_smb.wire.base import FILEID_RELATED, FileId
from wsd_smb.wire.header import (SMB2_FLAGS_ASYNC_COMMAND, SMB2_FLAGS_RELATED_OPERATIONS, SMB2_FLAGS_SIGNED,
                                 Command)

IPC = "\\\\127.0.0.1\\IPC$".encode("utf-16-le")


@contextmanager
def handler(command, fn, *, blocking=False, needs_tree=True):
    old = DISPATCH.get(command)
    DISPATCH[command] = Handler(command, fn, blocking, True, needs_tree)
    try:
        yield
    finally:
        if old is None:
            DISPATCH.pop(command, None)
        else:
            DISPATCH[command] = old


def logged_on(st, dialect=0x0311) -> RawClient:
    c = RawClient(st.host, st.port)
    c.negotiate(dialects=(dialect,))
    assert c.session_setup(USER, PASSWORD).status == 0
    return c


def test_related_compound_inherits_session_and_tree(smbd):
    c = logged_on(smbd)
    tc = c.build(Command.SMB2_TREE_CONNECT, w.TreeConnectRequest(path=IPC).pack())
    td = c.build(Command.SMB2_TREE_DISCONNECT, w.TreeDisconnectRequest().pack(), session_id=0xFFFFFFFFFFFFFFFF,
                 tree_id=0xFFFFFFFF, flags=SMB2_FLAGS_RELATED_OPERATIONS)
    c.send_raw(c.compound([tc, td]))
    r1, r2 = c.recv()
    assert (r1.status, r2.status) == (0, 0)
    assert r2.header.tree_id == r1.header.tree_id != 0 and r2.header.session_id == c.session_id
    assert r1.header.next_command % 8 == 0 and r2.header.flags & SMB2_FLAGS_RELATED_OPERATIONS
    for r in (r1, r2):  # each element is signed on its own (MS-SMB2 3.3.4.1.3)
        assert r.header.flags & SMB2_FLAGS_SIGNED and cr.verify_signature(c.signing_key, r.raw, c.signing_alg)
    s = next(iter(smbd.server.global_session_table.values()))
    assert s.tree_connect_table == {}
    c.close()


def test_related_compound_error_propagates(smbd):
    c = logged_on(smbd)
    bad = c.build(Command.SMB2_TREE_CONNECT, w.TreeConnectRequest(path="\\\\h\\nosuch".encode("utf-16-le")).pack())
    td = c.build(Command.SMB2_TREE_DISCONNECT, w.TreeDisconnectRequest().pack(), flags=SMB2_FLAGS_RELATED_OPERATIONS)
    e = c.build(Command.SMB2_ECHO, w.EchoRequest().pack(), flags=SMB2_FLAGS_RELATED_OPERATIONS)
    c.send_raw(c.compound([bad, td, e]))
    rs = c.recv()
    # no tree connect to inherit -> INVALID_PARAMETER; ECHO needs none and succeeds
    assert [r.status for r in rs] == [ntstatus.STATUS_BAD_NETWORK_NAME, ntstatus.STATUS_INVALID_PARAMETER, 0]
    c.close()


def test_related_fileid_after_failed_create_gets_create_status(smbd):
    """MS-SMB2 3.3.5.2.7.2: a related request whose FileId a failed CREATE should have
    produced fails with that CREATE's status; other failures do not propagate."""
    calls = []

    def create(ctx, req):
        raise ntstatus.StatusObjectNameNotFound()

    def flush(ctx, req):
        calls.append(req.file_id)
        raise ntstatus.StatusAccessDenied()

    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    rel = SMB2_FLAGS_RELATED_OPERATIONS
    with handler(Command.SMB2_CREATE, create), handler(Command.SMB2_FLUSH, flush):
        cr = c.build(Command.SMB2_CREATE, w.CreateRequest(name="x".encode("utf-16-le")).pack(), tree_id=tid)
        fl = c.build(Command.SMB2_FLUSH, w.FlushRequest(file_id=FILEID_RELATED).pack(), flags=rel)
        c.send_raw(c.compound([cr, fl]))
        assert [r.status for r in c.recv()] == [ntstatus.STATUS_OBJECT_NAME_NOT_FOUND] * 2
        assert calls == []
        f1 = c.build(Command.SMB2_FLUSH, w.FlushRequest(file_id=FileId(3, 4)).pack(), tree_id=tid)
        f2 = c.build(Command.SMB2_FLUSH, w.FlushRequest(file_id=FILEID_RELATED).pack(), flags=rel)
        c.send_raw(c.compound([f1, f2]))
        assert [r.status for r in c.recv()] == [ntstatus.STATUS_ACCESS_DENIED] * 2
        assert calls == [FileId(3, 4), FileId(3, 4)]  # the second ran (not a propagated status)
    c.close()


def test_async_in_the_middle_of_a_compound_is_internal_error(smbd):
    ops = []

    def notify(ctx, req):
        op = ctx.go_async()
        ops.append(op)
        return op

    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    with handler(Command.SMB2_CHANGE_NOTIFY, notify):
        n = w.ChangeNotifyRequest(output_buffer_length=4096, file_id=FileId(1, 1)).pack()
        c.send_raw(c.compound([c.build(Command.SMB2_CHANGE_NOTIFY, n, tree_id=tid),
                               c.build(Command.SMB2_ECHO, w.EchoRequest().pack())]))
        rs = c.recv()
        assert [r.status for r in rs] == [ntstatus.STATUS_INTERNAL_ERROR, 0]
        assert ops[0].cancelled
    c.close()


def test_unrelated_compound_and_first_related_invalid(smbd):
    c = logged_on(smbd)
    parts = [c.build(Command.SMB2_ECHO, w.EchoRequest().pack()),
             c.build(Command.SMB2_TREE_CONNECT, w.TreeConnectRequest(path="\\\\h\\nosuch".encode("utf-16-le")).pack()),
             c.build(Command.SMB2_TREE_CONNECT, w.TreeConnectRequest(path=IPC).pack())]
    c.send_raw(c.compound(parts))
    rs = c.recv()
    assert [r.status for r in rs] == [0, ntstatus.STATUS_BAD_NETWORK_NAME, 0]
    assert [r.header.message_id for r in rs] == [2, 3, 4] or len({r.header.message_id for r in rs}) == 3
    c.send_raw(c.compound([c.build(Command.SMB2_ECHO, w.EchoRequest().pack(), flags=SMB2_FLAGS_RELATED_OPERATIONS)]))
    assert c.recv()[0].status == ntstatus.STATUS_INVALID_PARAMETER
    c.close()


def test_related_fileid_is_substituted(smbd):
    seen = []

    def fake_flush(ctx, req):
        seen.append(req.file_id)
        return Response(w.FlushResponse())

    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    with handler(Command.SMB2_FLUSH, fake_flush):
        first = c.build(Command.SMB2_FLUSH, w.FlushRequest(file_id=FileId(7, 9)).pack(), tree_id=tid)
        second = c.build(Command.SMB2_FLUSH, w.FlushRequest(file_id=FILEID_RELATED).pack(),
                         flags=SMB2_FLAGS_RELATED_OPERATIONS)
        c.send_raw(c.compound([first, second]))
        assert [r.status for r in c.recv()] == [0, 0]
        # unrelated request with the all-FF FileId: passed through untouched
        assert c.request(Command.SMB2_FLUSH, w.FlushRequest(file_id=FILEID_RELATED), tree_id=tid).status == 0
    assert seen == [FileId(7, 9), FileId(7, 9), FILEID_RELATED]
    c.close()


def test_async_interim_then_cancel(smbd):
    ops = []

    def notify(ctx, req):
        op = ctx.go_async()
        ops.append(op)
        return op

    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    with handler(Command.SMB2_CHANGE_NOTIFY, notify):
        body = w.ChangeNotifyRequest(output_buffer_length=4096, file_id=FileId(1, 1), completion_filter=0x17).pack()
        interim = c.request(Command.SMB2_CHANGE_NOTIFY, body, tree_id=tid, no_wait_final=True)
        assert interim.status == ntstatus.STATUS_PENDING
        assert interim.header.flags & SMB2_FLAGS_ASYNC_COMMAND and interim.header.async_id == ops[0].async_id
        assert interim.header.credit >= 1
        mid = interim.header.message_id
        # CANCEL by AsyncId (MS-SMB2 3.3.5.16): no response to the CANCEL, the op ends CANCELLED
        cancel = c.build(Command.SMB2_CANCEL, w.CancelRequest().pack(), flags=SMB2_FLAGS_ASYNC_COMMAND,
                         async_id=interim.header.async_id, message_id=mid, credit_charge=0)
        c.send_raw(c.compound([cancel]))
        final = c.recv()[0]
        assert final.status == ntstatus.STATUS_CANCELLED and final.header.message_id == mid
        assert ops[0].cancelled and ops[0].cancel_reason == "cancel"
        assert final.header.async_id == interim.header.async_id and final.header.credit == 0
        assert cr.verify_signature(c.signing_key, final.raw, c.signing_alg)
        # a sync CANCEL naming the MessageId works too
        interim = c.request(Command.SMB2_CHANGE_NOTIFY, body, tree_id=tid, no_wait_final=True)
        cancel = c.build(Command.SMB2_CANCEL, w.CancelRequest().pack(), message_id=interim.header.message_id,
                         credit_charge=0)
        c.send_raw(c.compound([cancel]))
        assert c.recv()[0].status == ntstatus.STATUS_CANCELLED
        assert echo(c).status == 0  # the connection goes on
    c.close()


def test_async_completed_from_another_thread(smbd):
    def notify(ctx, req):
        op = ctx.go_async()
        threading.Timer(0.1, op.complete, args=(Response(w.ChangeNotifyResponse(output_buffer=b"DATA")),)).start()
        return op

    c = logged_on(smbd, 0x0302)
    tid = c.tree_connect().header.tree_id
    with handler(Command.SMB2_CHANGE_NOTIFY, notify, blocking=True):
        body = w.ChangeNotifyRequest(output_buffer_length=4096, file_id=FileId(1, 1)).pack()
        interim = c.request(Command.SMB2_CHANGE_NOTIFY, body, tree_id=tid, no_wait_final=True)
        assert interim.status == ntstatus.STATUS_PENDING
        final = c.recv()[0]
        assert final.status == 0 and w.ChangeNotifyResponse.unpack(final.raw).output_buffer == b"DATA"
        assert final.header.flags & SMB2_FLAGS_ASYNC_COMMAND
    c.close()


def test_credit_grants_and_window(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    r = echo(c, credit=100)
    assert r.header.credit == 100
    # a MessageId far outside the window -> the server drops the connection (3.3.5.2.3)
    c.send_raw(c.compound([c.build(Command.SMB2_ECHO, w.EchoRequest().pack(), message_id=10_000)]))
    assert c.closed_by_server()
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,))
    echo(c, credit=10)
    c.send_raw(c.compound([c.build(Command.SMB2_ECHO, w.EchoRequest().pack(), message_id=1)]))  # replayed id
    assert c.closed_by_server()


def test_credit_charge_checked_for_large_read(smbd):
    calls = []

    def fake_read(ctx, req):
        calls.append(req.length)
        return Response(w.ReadResponse(data=b"x"))

    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    echo(c, credit=64)
    with handler(Command.SMB2_READ, fake_read):
        req = w.ReadRequest(length=200_000, file_id=FileId(1, 2))
        assert c.request(Command.SMB2_READ, req, tree_id=tid, credit_charge=1).status == \
            ntstatus.STATUS_INVALID_PARAMETER
        assert c.request(Command.SMB2_READ, req, tree_id=tid, credit_charge=4).status == 0
    assert calls == [200_000]
    c.close()


def test_unregistered_and_unknown_commands(smbd):
    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    old = DISPATCH.pop(Command.SMB2_QUERY_INFO, None)
    try:
        r = c.request(Command.SMB2_QUERY_INFO, w.QueryInfoRequest(info_type=1, file_info_class=5), tree_id=tid)
        assert r.status == ntstatus.STATUS_NOT_SUPPORTED
    finally:
        if old is not None:
            DISPATCH[Command.SMB2_QUERY_INFO] = old
    assert c.request(0x0033, b"\x04\x00\x00\x00", tree_id=tid).status == ntstatus.STATUS_INVALID_PARAMETER
    assert c.request(Command.SMB2_ECHO, b"\x05\x00\x00\x00").status == ntstatus.STATUS_INVALID_PARAMETER
    c.close()


def _smb1_negotiate(dialects: list[bytes]) -> bytes:
    data = b"".join(b"\x02" + d + b"\0" for d in dialects)
    hdr = b"\xffSMB" + bytes([0x72]) + b"\0" * 4 + b"\x18" + struct.pack("<H", 0xC853) + b"\0" * 20
    return hdr + b"\x00" + struct.pack("<H", len(data)) + data


def test_smb1_multi_protocol_negotiate(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.send_raw(_smb1_negotiate([b"NT LM 0.12", b"SMB 2.002", b"SMB 2.???"]))
    raw = c.recv_raw()
    rsp = w.NegotiateResponse.unpack(raw)
    assert raw[:4] == b"\xfeSMB" and rsp.dialect_revision == 0x02FF
    c.mid = 1
    assert c.negotiate().header.message_id == 1 and c.dialect == 0x0311
    assert c.session_setup(USER, PASSWORD).status == 0
    c.close()
    c = RawClient(smbd.host, smbd.port)
    c.send_raw(_smb1_negotiate([b"NT LM 0.12", b"SMB 2.002"]))
    assert w.NegotiateResponse.unpack(c.recv_raw()).dialect_revision == 0x0202
    c.mid = 1
    c.dialect = 0x0202
    assert c.session_setup(USER, PASSWORD).status == 0
    c.close()
    c = RawClient(smbd.host, smbd.port)
    c.send_raw(_smb1_negotiate([b"NT LM 0.12"]))  # SMB1 only: refused
    assert c.closed_by_server()


def test_negotiate_errors(smbd):
    c = RawClient(smbd.host, smbd.port)
    assert c.negotiate(dialects=(0x0201, 0x0299)).status == ntstatus.STATUS_NOT_SUPPORTED
    c.close()
    c = RawClient(smbd.host, smbd.port)
    # 3.1.1 without a preauth integrity context
    req = w.NegotiateRequest(dialects=[0x0311], negotiate_contexts=[w.NegotiateContext(
        context_type=2, data=w.EncryptionCapabilities(ciphers=[1]).pack())])
    c.send_raw(c.build(Command.SMB2_NEGOTIATE, req.pack()))
    assert c.recv()[0].status == ntstatus.STATUS_INVALID_PARAMETER
    c.close()
    c = RawClient(smbd.host, smbd.port)
    c.negotiate()
    c.send_raw(c.build(Command.SMB2_NEGOTIATE, w.NegotiateRequest(dialects=[0x0202]).pack()))  # second NEGOTIATE
    assert c.closed_by_server()


@pytest.mark.parametrize("payload", [
    b"\x00\x00\x00\x04junk",  # bad protocol id
    b"\x01\x00\x00\x04\xfeSMB",  # bad Direct TCP frame header
    b"\x00\x00\x00\x10\xfeSMB" + b"\0" * 12,  # truncated SMB2 header
])
def test_malformed_frames_disconnect(smbd, payload):
    c = RawClient(smbd.host, smbd.port)
    c.sock.sendall(payload)
    assert c.closed_by_server()


def test_request_before_negotiate_and_bad_next_command_disconnect(smbd):
    c = RawClient(smbd.host, smbd.port)
    c.send_raw(c.build(Command.SMB2_ECHO, w.EchoRequest().pack()))
    assert c.closed_by_server()
    c = logged_on(smbd)
    m = bytearray(c.build(Command.SMB2_ECHO, w.EchoRequest().pack()) + b"\0" * 12)
    struct.pack_into("<I", m, 20, 70)  # NextCommand not 8-aligned
    c.send_raw(bytes(m))
    assert c.closed_by_server()


def test_many_clients_at_once(smbd):
    """Concurrency: 20 clients logged on at once, all served by one loop + pool."""
    clients = [logged_on(smbd, 0x0302) for _ in range(20)]
    for c in clients:
        c.send_raw(c.compound([c.build(Command.SMB2_ECHO, w.EchoRequest().pack())]))
    assert all(c.recv()[0].status == 0 for c in clients)
    assert len(smbd.server.global_session_table) == 20
    for c in clients:
        c.close()


def test_server_initiated_lease_break_notification_header(smbd):
    """LB-4 framing: Command OPLOCK_BREAK, MessageId 0xFFFFFFFFFFFFFFFF, SessionId 0, TreeId 0, unsigned."""
    def flush(ctx, req):
        ctx.connection.send_notification(Command.SMB2_OPLOCK_BREAK, w.LeaseBreakNotification(
            new_epoch=2, flags=w.SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED, lease_key=b"K" * 16,
            current_lease_state=7, new_lease_state=1))
        return Response(w.FlushResponse())

    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    with handler(Command.SMB2_FLUSH, flush):
        got = [c.request(Command.SMB2_FLUSH, w.FlushRequest(file_id=FileId(1, 1)), tree_id=tid)]
        got.append(c.recv()[0])
    note = next(r for r in got if r.header.command == Command.SMB2_OPLOCK_BREAK)
    h = note.header
    assert (h.message_id, h.session_id, h.tree_id) == (0xFFFFFFFFFFFFFFFF, 0, 0)
    assert not h.flags & SMB2_FLAGS_SIGNED and h.signature == b"\0" * 16
    n = w.LeaseBreakNotification.unpack(note.raw)
    assert (n.new_epoch, n.flags, n.current_lease_state, n.new_lease_state) == (2, 1, 7, 1)
    c.close()


@pytest.mark.parametrize("cipher", [cr.AES_128_CCM, cr.AES_128_GCM, cr.AES_256_CCM, cr.AES_256_GCM])
def test_each_negotiated_cipher_carries_encrypted_traffic(smbd, cipher):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,), ciphers=(cipher,))
    assert c.cipher == cipher
    assert c.session_setup(USER, PASSWORD).status == 0
    c.encrypt = True
    r = c.tree_connect()
    assert r.status == 0
    s = next(iter(smbd.server.global_session_table.values()))
    assert len(s.encryption_key) == cr.CIPHER_KEY_SIZE[cipher]
    assert echo(c).status == 0
    c.close()


@pytest.mark.parametrize("alg", [cr.HMAC_SHA256, cr.AES_CMAC, cr.AES_GMAC])
def test_each_negotiated_signing_algorithm(smbd, alg):
    c = RawClient(smbd.host, smbd.port)
    c.negotiate(dialects=(0x0311,), signing=(alg,))
    assert c.signing_alg == alg
    assert c.session_setup(USER, PASSWORD).status == 0
    r = c.tree_connect()
    assert r.status == 0 and cr.verify_signature(c.signing_key, r.raw, alg)
    c.close()


def test_stop_drains_requests_in_flight(smbd_factory):
    """Stopping the server (what SIGTERM does) lets a request already being handled finish
    and its response go out before the connection closes."""
    import time as _t

    def slow_flush(ctx, req):
        _t.sleep(0.5)
        return Response(w.FlushResponse())

    st = smbd_factory()
    c = logged_on(st)
    tid = c.tree_connect().header.tree_id
    with handler(Command.SMB2_FLUSH, slow_flush, blocking=True):
        c.send_raw(c.compound([c.build(Command.SMB2_FLUSH, w.FlushRequest(file_id=FileId(1, 1)).pack(),
                                       tree_id=tid)]))
        _t.sleep(0.1)  # the handler is running in the pool now
        stopper = threading.Thread(target=st.stop)
        stopper.start()
        r = c.recv()[0]
        assert r.header.command == Command.SMB2_FLUSH and r.status == 0
        assert c.closed_by_server(timeout=10)
        stopper.join(15)
    st.stop = lambda: None  # already stopped; the fixture's teardown must not stop it twice


def test_logoff_cancels_pending_async_ops_with_reason(smbd):
    ops = []

    def notify(ctx, req):
        op = ctx.go_async(on_cancel=lambda o: o.complete(ntstatus.NtStatusError(0x0000010B)))  # NOTIFY_CLEANUP
        ops.append(op)
        return op

    c = logged_on(smbd)
    tid = c.tree_connect().header.tree_id
    with handler(Command.SMB2_CHANGE_NOTIFY, notify):
        body = w.ChangeNotifyRequest(output_buffer_length=4096, file_id=FileId(1, 1)).pack()
        interim = c.request(Command.SMB2_CHANGE_NOTIFY, body, tree_id=tid, no_wait_final=True)
        assert interim.status == ntstatus.STATUS_PENDING
        c.send_raw(c.compound([c.build(Command.SMB2_LOGOFF, w.LogoffRequest().pack())]))
        got = {r.header.command: r for r in c.recv() + c.recv()}
        assert got[Command.SMB2_LOGOFF].status == 0
        assert got[Command.SMB2_CHANGE_NOTIFY].status == 0x0000010B
        assert ops[0].cancel_reason == "session_closed"
    c.close()


def test_share_encrypt_data(smbd_factory, tmp_path):
    """Share.EncryptData: the TREE_CONNECT response says so (SMB2_SHAREFLAG_ENCRYPT_DATA);
    plaintext requests on that tree are refused, encrypted ones served and answered encrypted."""
    from wsd_smb.core.state import Share

    st = smbd_factory()
    d = tmp_path / "secret"
    d.mkdir()
    st.server.config.add_share(Share("secret", str(d), encrypt_data=True))
    c = logged_on(st)
    r = c.tree_connect("secret")
    assert r.status == 0
    assert not c.last_encrypted  # the TREE_CONNECT answer itself is plaintext (signed)
    rsp = w.TreeConnectResponse.unpack(r.raw)
    assert rsp.share_flags & w.SMB2_SHAREFLAG_ENCRYPT_DATA
    tid = r.header.tree_id
    q = w.QueryInfoRequest(info_type=2, file_info_class=1, output_buffer_length=1024, file_id=FileId(1, 1))
    assert c.request(Command.SMB2_QUERY_INFO, q, tree_id=tid).status == ntstatus.STATUS_ACCESS_DENIED
    c.encrypt = True
    c.send_raw(c.compound([c.build(Command.SMB2_TREE_DISCONNECT, w.TreeDisconnectRequest().pack(), tree_id=tid)]))
    assert c.recv()[0].status == 0 and c.last_encrypted
    c.close()


def test_connection_without_logon_is_dropped_after_logon_timeout(smbd_factory):
    st = smbd_factory(logon_timeout=0.5)
    idle = RawClient(st.host, st.port)
    idle.negotiate()
    c = logged_on(st)  # a logged-on connection stays
    assert idle.closed_by_server(timeout=5)
    import time as _t
    _t.sleep(0.6)
    assert echo(c).status == 0
    c.close()
