"""The large-WRITE receive path: the kernel reads a big message straight into its
buffer (RingStreamProtocol lends the framer's message buffer), and message buffers
are reused from a pool.  Driven by smbprotocol (a client nobody here wrote)."""
from __future__ import annotations

import os
import uuid

import pytest

from smbunit import PASSWORD, USER

smbclient = pytest.importorskip("smbclient", reason="smbprotocol is not installed")


def test_big_writes_land_in_pooled_message_buffers(smbd, tmp_path):
    server = f"{smbd.host}"
    smbclient.register_session(server, username=USER, password=PASSWORD, port=smbd.port,
                               connection_timeout=10)
    try:
        data = os.urandom(5 * (8 << 20) + 12345)  # five 8 MiB WRITEs and a short one
        path = rf"\\{server}\share\big-{uuid.uuid4().hex}.bin"
        with smbclient.open_file(path, mode="wb", port=smbd.port) as f:
            f.write(data)
        with smbclient.open_file(path, mode="rb", port=smbd.port) as f:
            back = f.read()
        assert back == data
        stored = tmp_path / "share" / path.rsplit("\\", 1)[1]
        assert stored.read_bytes() == data
    finally:
        smbclient.reset_connection_cache()
    pool, direct = smbd.call(lambda: (smbd.smb.buffers, smbd.smb.direct_bytes))
    # most of the 40 MiB went from the kernel straight into message buffers ...
    assert direct > 32 << 20
    # ... which the pool handed out again after the first ones were done with
    assert pool.allocated >= 1 and pool.reused >= 1
    assert pool.pooled_bytes <= pool.max_bytes
