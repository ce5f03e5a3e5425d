"""Connection management of the verbs provider (docs/verbs.md): rdma_cm events, queue pairs
through their states, and the socket calls that use them (WSPListen, WSPAccept with the
switch's condition function, WSPConnect)."""
from __future__ import annotations

import logging
import time

from wsd import errors
from wsd.spi import FD_ACCEPT, FD_CONNECT

from .pv import PV
from .sockets import _Sock

log = logging.getLogger("wsd.verbs")


class ConnectionMixin:
    """VerbsProvider's rdma_cm side (mixed into :class:`wsd_verbs.VerbsProvider`)."""

    # ------------------------------------------------------------------ CM events
    def _on_cm_event(self, ev) -> None:
        import pyverbs.cm_enums as ce
        id_ptr, listen_ptr, etype, status = self._glue.event_fields(ev)
        name = ev.event_str()
        self.stats[f"cm_{name}"] += 1
        if etype == ce.RDMA_CM_EVENT_CONNECT_REQUEST:
            self._on_connect_request(ev, id_ptr, listen_ptr)
            return
        s = self._by_cm.get(id_ptr)
        if s is None:
            lst = self._pending_children.pop(id_ptr, None)
            if lst is not None:        # a queued request went away before it was accepted
                for i, item in enumerate(lst.queue):
                    if item[1] == id_ptr:
                        del lst.queue[i]
                        self._close_cmid(item[0])
                        break
            log.debug("verbs: %s for an unknown CM id", name)
            return
        if etype == ce.RDMA_CM_EVENT_ADDR_RESOLVED:
            if s.state == "connecting":
                PyverbsError = PV.PyverbsError
                try:
                    s.cmid.resolve_route(max(100, int(self.connect_timeout * 1000)))
                except PyverbsError as err:
                    self._connect_failed(s, errors.WSAEHOSTUNREACH.wsa_code, f"rdma_resolve_route: {err}")
        elif etype == ce.RDMA_CM_EVENT_ROUTE_RESOLVED:
            if s.state == "connecting":
                self._connect_qp(s)
        elif etype == ce.RDMA_CM_EVENT_CONNECT_RESPONSE:
            if s.state == "connecting":
                PyverbsError = PV.PyverbsError
                try:
                    self._to_rtr_rts(s)
                    s.cmid.establish()
                except PyverbsError as err:
                    self._connect_failed(s, errors.WSAECONNREFUSED.wsa_code, f"bringing the QP up: {err}")
                    return
                s.state = "connected"
                s.connect_deadline = None
                self._signal(s, FD_CONNECT)
        elif etype == ce.RDMA_CM_EVENT_ESTABLISHED:
            pass
        elif etype == ce.RDMA_CM_EVENT_REJECTED:
            if s.state == "connecting":
                self._connect_failed(s, errors.WSAECONNREFUSED.wsa_code, f"rejected (status {status})")
        elif etype in (ce.RDMA_CM_EVENT_ADDR_ERROR, ce.RDMA_CM_EVENT_ROUTE_ERROR, ce.RDMA_CM_EVENT_UNREACHABLE,
                       ce.RDMA_CM_EVENT_CONNECT_ERROR):
            if s.state == "connecting":
                code = (errors.WSAEHOSTUNREACH if etype in (ce.RDMA_CM_EVENT_ADDR_ERROR, ce.RDMA_CM_EVENT_ROUTE_ERROR)
                        else errors.WSAECONNREFUSED if etype == ce.RDMA_CM_EVENT_UNREACHABLE
                        else errors.WSAECONNRESET).wsa_code
                self._connect_failed(s, code, f"{name} (status {status})")
            elif s.state == "connected":
                self._reset(s, errors.WSAECONNRESET.wsa_code, name)
        elif etype in (ce.RDMA_CM_EVENT_DISCONNECTED, ce.RDMA_CM_EVENT_DEVICE_REMOVAL):
            if s.state in ("connected", "connecting"):
                self._reset(s, errors.WSAECONNRESET.wsa_code, f"{name} from the peer")
        # TIMEWAIT_EXIT, ADDR_CHANGE and the rest need nothing

    def _on_connect_request(self, ev, id_ptr: int, listen_ptr: int) -> None:
        from pyverbs.cmid import CMID
        lst = self._by_cm.get(listen_ptr)
        if lst is None or not lst.listening:
            log.info("verbs: connection request for a listener that is gone; ignored")
            return
        child = CMID(creator=ev, listen_id=lst.cmid)
        _src, caller = self._glue.cm_id_addrs(id_ptr)
        lst.queue.append((child, id_ptr, caller or ("?", 0)))
        self._pending_children[id_ptr] = lst
        # WSD-A2: signal the event object registered for FD_ACCEPT
        self._signal(lst, FD_ACCEPT)

    def _connect_failed(self, s: _Sock, code: int, why: str) -> None:
        log.info("verbs: connect to %s failed: %s", s.peer, why)
        self._destroy_cm(s)
        s.state = "new"
        s.connect_deadline = None
        self._signal(s, FD_CONNECT, code)

    # ------------------------------------------------------------------ queue pairs
    def _create_qp(self, s: _Sock, cmid) -> None:
        from pyverbs.qp import QP, QPCap, QPInitAttr
        e = self._e
        if len(self._by_qpn) >= self._max_conns:
            raise errors.WSAENOBUFS(f"verbs provider: at most {self._max_conns} connections "
                                    f"(cq_entries={self.cq_entries})")
        # one send slot more than max_send_wr: the fence's (see _post_fences)
        cap = QPCap(max_send_wr=self.max_send_wr + 1, max_recv_wr=self.max_recv_wr, max_send_sge=1,
                    max_recv_sge=1)
        qp = QP(self._pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self._cq, rcq=self._cq, cap=cap, sq_sig_all=0))
        attr, mask = cmid.init_qp_attr(e.IBV_QPS_INIT)
        attr.qp_access_flags = (e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ
                                | e.IBV_ACCESS_REMOTE_WRITE)
        qp.modify(attr, mask)
        s.qp = qp
        s.qp_num = qp.qp_num
        self._by_qpn[qp.qp_num] = s

    def _to_rtr_rts(self, s: _Sock) -> None:
        e = self._e
        attr, mask = s.cmid.init_qp_attr(e.IBV_QPS_RTR)
        attr.min_rnr_timer = self.min_rnr_timer
        s.qp.modify(attr, mask | e.IBV_QP_MIN_RNR_TIMER)
        attr, mask = s.cmid.init_qp_attr(e.IBV_QPS_RTS)
        attr.rnr_retry = 7            # 7 = retry for ever: the NIC's flow control
        # local ACK timeout 4.096 us * 2^ack_timeout per try (18: ~1.07 s, x 8 tries): a starved guest
        # must not lose the connection; a peer that died is noticed through rdma_cm's DISCONNECTED
        attr.timeout = max(attr.timeout, self.ack_timeout)
        s.qp.modify(attr, mask | e.IBV_QP_RNR_RETRY | e.IBV_QP_TIMEOUT)

    def _conn_param(self, s: _Sock):
        from pyverbs.cmid import ConnParam
        return ConnParam(resources=self.rd_atomic, depth=self.rd_atomic, retry=7, rnr_retry=7, qp_num=s.qp_num)

    def _connect_qp(self, s: _Sock) -> None:
        PyverbsError = PV.PyverbsError
        try:
            self._create_qp(s, s.cmid)
            s.cmid.connect(self._conn_param(s))
        except errors.WsaError as e:
            self._connect_failed(s, e.wsa_code, str(e))
        except PyverbsError as e:
            self._connect_failed(s, self._wsa(e, errors.WSAENOBUFS, "rdma_connect").wsa_code, str(e))

    def _qp_to_error(self, s: _Sock) -> None:
        PyverbsError = PV.PyverbsError
        from pyverbs.qp import QPAttr
        if s.qp is None:
            return
        try:
            s.qp.modify(QPAttr(qp_state=self._e.IBV_QPS_ERR), self._e.IBV_QP_STATE)
        except PyverbsError as err:
            log.debug("verbs: QP to ERR: %s", err)

    def _release_qp(self, s: _Sock) -> None:
        if s.qp is not None:
            self._by_qpn.pop(s.qp_num, None)
            s.qp.close()
            s.qp = None

    def _close_cmid(self, cmid) -> None:
        PyverbsError = PV.PyverbsError
        try:
            cmid.close()
        except PyverbsError as e:
            log.debug("verbs: closing a CM id: %s", e)

    def _destroy_cm(self, s: _Sock) -> None:
        if s.cmid is not None:
            self._by_cm.pop(s.cm_ptr, None)
            self._release_qp(s)
            if self._in_event:
                # rdma_destroy_id waits until every event of the id is acknowledged: the one being
                # handled is acknowledged right after the handler, then the id is destroyed
                self._doomed.append(s.cmid)
            else:
                self._close_cmid(s.cmid)
            s.cmid = None
            s.cm_ptr = 0

    # ------------------------------------------------------------------ listening, accepting, connecting
    def _new_cmid(self, s: _Sock):
        import pyverbs.cm_enums as ce
        from pyverbs.cmid import CMID
        cmid = CMID(creator=self._ec, port_space=ce.RDMA_PS_TCP)
        s.cmid = cmid
        s.cm_ptr = self._glue.ptr_of(cmid)
        self._by_cm[s.cm_ptr] = s
        return cmid

    def WSPListen(self, s, backlog) -> None:
        import pyverbs.cm_enums as ce
        from pyverbs.cmid import AddrInfo
        PyverbsError = PV.PyverbsError
        c = self._get(s)
        host, port = c.local
        with self._lock:
            cmid = self._new_cmid(c)
            try:
                cmid.bind_addr(AddrInfo(src=self._nic_host(host), src_service=str(port),
                                        port_space=ce.RDMA_PS_TCP, flags=ce.RAI_PASSIVE))
                cmid.listen(max(1, backlog))
            except PyverbsError as e:
                self._destroy_cm(c)
                raise self._wsa(e, errors.WSAEADDRINUSE, f"rdma_cm listen on {host}:{port}") from None
            c.listening = True
            c.state = "listening"

    def WSPAccept(self, s, condition, callback_data) -> int:
        # overrides SanProviderBase.WSPAccept: the QP is brought up and rdma_accept called under the
        # lock, before WPUCreateSocketHandle (a failure there must not leave a switch descriptor)
        PyverbsError = PV.PyverbsError
        from wsd.spi import CF_ACCEPT
        lst = self._get(s)
        with self._lock:
            if not lst.listening:
                raise errors.WSAEINVAL("socket is not listening")
            if not lst.queue:
                raise errors.WSAEWOULDBLOCK()
            child, child_ptr, caller = lst.queue.popleft()
            self._pending_children.pop(child_ptr, None)
        # WSD-A3: the condition function runs on this thread, before WSPAccept returns
        verdict = CF_ACCEPT
        if condition is not None:
            verdict = condition(caller, None, lst.local, None, callback_data)
        with self._lock:
            # WSD-A6: reset the event; signal again at once while more requests are queued
            if lst.event is not None:
                self.upcalls.ResetEvent(lst.event)
                if lst.queue:
                    self._signal(lst, FD_ACCEPT)
            if verdict != CF_ACCEPT:
                # WSD-A7/A8: the peer learns it only now (its FD_CONNECT: WSAECONNREFUSED)
                try:
                    child.reject()
                except PyverbsError as e:
                    log.info("verbs: rdma_reject: %s", e)
                self._close_cmid(child)
                self.stats["rejected"] += 1
                raise errors.WSAECONNREFUSED("rejected by the condition function")
            # WSD-A5: internal state, a QP in RTS, rdma_accept, WPUCreateSocketHandle
            c = self._new_socket_state(next(self._ids))
            c.cmid, c.cm_ptr = child, child_ptr
            c.peer = caller
            c.local = lst.local
            c.listener = lst.id
            try:
                self._create_qp(c, child)
                self._to_rtr_rts(c)
                child.accept(self._conn_param(c))
            except (PyverbsError, errors.WsaError) as e:
                self._release_qp(c)
                try:
                    child.reject()
                except PyverbsError:
                    pass
                self._close_cmid(child)
                raise self._wsa(e, errors.WSAENOBUFS, "accepting a connection request") from None
            c.state = "connected"
            self._conns[c.id] = c
            self._by_cm[child_ptr] = c
            self.stats["accepted"] += 1
        c.switch_handle = self.upcalls.WPUCreateSocketHandle(self.name, c.id)
        return c.id

    def WSPConnect(self, s, addr, caller_data=None) -> None:
        import pyverbs.cm_enums as ce
        from pyverbs.cmid import AddrInfo
        PyverbsError = PV.PyverbsError
        c = self._get(s)
        host, port = addr[0], int(addr[1])
        with self._lock:
            if c.state in ("connecting", "connected"):
                raise errors.WSAEISCONN() if c.state == "connected" else errors.WSAEALREADY()
            c.peer = (host, port)
            target = self._nic_host(host)
            if c.local[0] in ("0.0.0.0", ""):
                c.local = (self.nic_addr, c.local[1])
            try:
                cmid = self._new_cmid(c)
                c.state = "connecting"
                c.connect_deadline = time.monotonic() + self.connect_timeout
                cmid.resolve_addr(AddrInfo(dst=target, dst_service=str(port), port_space=ce.RDMA_PS_TCP),
                                  max(100, int(self.connect_timeout * 1000)))
            except PyverbsError as e:
                self._destroy_cm(c)
                c.state = "new"
                c.connect_deadline = None
                err = self._wsa(e, errors.WSAEHOSTUNREACH, f"resolving {host}")
                self._signal(c, FD_CONNECT, err.wsa_code)
        raise errors.WSAEWOULDBLOCK("connect in progress")
