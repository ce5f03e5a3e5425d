"""Helpers for the SMB unit tests: an in-process wsd-smbd on an ephemeral loopback port
(its own event loop thread), so tests can drive it with real clients and read the
server's state.  (Not in conftest.py: other test folders have a conftest module too.)"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from wsd_smb.core.state import Server, ServerConfig, Share, User
from wsd_smb.server.driver import SmbServer

USER, PASSWORD = "alice", "Passw0rd!"


class ServerThread:
    def __init__(self, config: ServerConfig):
        self.server = Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="smbd-loop", daemon=True)
        self.thread.start()
        self.smb = SmbServer(self.server, workers=4)
        asyncio.run_coroutine_threadsafe(self.smb.start("127.0.0.1", 0), self.loop).result(10)
        self.host = "127.0.0.1"
        self.port = self.smb.port

    def call(self, fn, *args):
        """Run fn on the server's loop thread (for consistent reads of server state)."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.smb.close(drain_timeout=1), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def make_config(tmp_path: Path, **kw) -> ServerConfig:
    cfg = ServerConfig(**kw)
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    cfg.add_share(Share("share", str(share)))
    cfg.users[USER] = User.with_password(USER, PASSWORD, is_admin=True)
    cfg.users["bob"] = User.with_password("bob", "bobpw")
    return cfg


