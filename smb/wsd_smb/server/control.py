"""The control socket of wsd-smbd: a Unix-domain stream socket (``<state_dir>/wsd-smbd.ctl``,
mode 0600) served on the server's event loop; the protocol is admin/control.py (sans-IO),
the answers are built here, on the loop thread that owns the core's state.

Start: a socket file left by a server that is gone (connect refused) is replaced; one
that a live server answers on is left alone (this server then runs without a control
socket and logs why); something there that is not a socket is not touched.  Close: the
socket file is removed if it is still the one this server made.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from ..admin.control import ControlConnection, Request
from ..admin.status import build_status
from ..core.state import Server

log = logging.getLogger("wsd_smb.control")

SOCKET_NAME = "wsd-smbd.ctl"
#: clients served at once; more are closed at once (a local admin tool needs one)
MAX_CLIENTS = 16
#: bytes read per call (a request line is at most admin.control.MAX_REQUEST)
_READ_SIZE = 4096
#: seconds an answer may take to be written out (a client that does not read is dropped)
WRITE_TIMEOUT = 10.0


def version() -> str:
    try:
        return metadata.version("wsd")
    except metadata.PackageNotFoundError:
        return "unknown"


class ControlServer:
    """Serves *path* on the running loop; *listen* returns the SMB listen addresses."""

    def __init__(self, server: Server, path: str | os.PathLike, listen: Callable[[], list[str]] | None = None,
                 timeout: float | None = None) -> None:
        self.server = server
        self.path = Path(path)
        self.listen = listen or (lambda: [])
        self.timeout = timeout
        self._srv: asyncio.AbstractServer | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file made here
        self._tasks: set[asyncio.Task] = set()
        self.requests = 0
        self.errors = 0

    @property
    def serving(self) -> bool:
        return self._srv is not None

    async def start(self) -> bool:
        """Bind and listen; False (logged) when it cannot serve here."""
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.warning("event=control_socket_off path=%s reason=%r", path, f"cannot create its folder: {e}")
            return False
        if len(os.fsencode(path)) >= 108:  # sun_path
            log.warning("event=control_socket_off path=%s reason='path longer than a Unix socket address allows'",
                        path)
            return False
        if not await self._clear_stale():
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.fchmod(sock.fileno(), 0o600)  # Linux: bind() gives the file the socket inode's mode
            sock.bind(os.fspath(path))
            os.chmod(path, 0o600)
            st = os.stat(path)
            self._ident = (st.st_dev, st.st_ino)
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
            self._srv = await asyncio.start_unix_server(self._client, sock=sock)
        except OSError as e:
            sock.close()
            log.warning("event=control_socket_off path=%s reason=%r", path, str(e))
            self._remove()
            return False
        log.info("event=control_socket path=%s", path)
        return True

    async def _clear_stale(self) -> bool:
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        except OSError as e:
            log.warning("event=control_socket_off path=%s reason=%r", path, str(e))
            return False
        if not stat.S_ISSOCK(st.st_mode):
            log.warning("event=control_socket_off path=%s reason='something that is not a socket is there'", path)
            return False
        try:
            _r, w = await asyncio.wait_for(asyncio.open_unix_connection(os.fspath(path)), 2.0)
        except (ConnectionRefusedError, FileNotFoundError, asyncio.TimeoutError):
            pass  # nobody listens: a stale socket of a server that is gone
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                log.warning("event=control_socket_off path=%s reason=%r", path, str(e))
                return False
        else:
            w.close()
            log.warning("event=control_socket_off path=%s reason='another running server serves it'", path)
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("event=control_socket_off path=%s reason=%r", path, f"cannot remove the stale socket: {e}")
            return False
        log.info("event=control_socket_stale_removed path=%s", path)
        return True

    async def close(self) -> None:
        if self._srv is not None:
            self._srv.close()
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2)
            await self._srv.wait_closed()
            self._srv = None
        self._remove()

    def _remove(self) -> None:
        if self._ident is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._ident:
                os.unlink(self.path)
        except OSError:
            pass
        self._ident = None

    # ------------------------------------------------------------ one client
    def answer(self, req: Request, now: float) -> dict:
        """The answer to a request (on the loop thread)."""
        if req.op == "ping":
            return {"pong": True}
        return {"status": build_status(self.server, now, version=version(), listen=self.listen())}

    @staticmethod
    async def _flush(conn: ControlConnection, writer: asyncio.StreamWriter) -> None:
        out = conn.data_to_send()
        if out:
            writer.write(out)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._tasks) >= MAX_CLIENTS:
            log.warning("event=control_client_refused reason='%d clients already'", MAX_CLIENTS)
            writer.close()
            return
        self._tasks.add(task)
        conn = ControlConnection(time.time()) if self.timeout is None else ControlConnection(time.time(), self.timeout)
        try:
            while not conn.closing:
                req = conn.next_event()
                while req is not None:
                    self.requests += 1
                    conn.respond(self.answer(req, time.time()), time.time())
                    req = conn.next_event()
                await self._flush(conn, writer)
                if conn.closing:
                    break
                try:
                    data = await asyncio.wait_for(reader.read(_READ_SIZE), max(0.0, conn.deadline - time.time()))
                except asyncio.TimeoutError:
                    conn.on_timer(time.time())
                    continue
                conn.receive_data(data)
            await self._flush(conn, writer)
            if conn.close_reason not in ("", "eof"):
                self.errors += 1
                log.info("event=control_client_error reason=%s", conn.close_reason)
        except asyncio.TimeoutError:
            self.errors += 1
            log.info("event=control_client_error reason=write_timeout")
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except (OSError, RuntimeError):
                pass
