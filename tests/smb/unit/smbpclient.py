"""One smbprotocol client for the unit tests that drive a real wsd-smbd through
smbprotocol's low-level API: a connection, a session and a tree connect, CREATE with any
access / disposition / options / create contexts, and raw SET_INFO / QUERY_INFO (the
security and file information classes the tests need)."""
from __future__ import annotations

import uuid

import pytest
from smbunit import PASSWORD, USER

pytest.importorskip("smbprotocol", reason="smbprotocol is not installed")

from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (CreateDisposition, FileAttributes, ImpersonationLevel, Open,  # noqa: E402
                              ShareAccess, SMB2QueryInfoRequest, SMB2QueryInfoResponse, SMB2SetInfoRequest)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

SHARE_ALL = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
FILE_ALL = 0x001F01FF
SMB2_0_INFO_FILE, SMB2_0_INFO_SECURITY = 1, 3


class SmbpClient:
    """*smbd*: anything with ``host`` and ``port`` (smbunit.ServerThread, sut_servers)."""

    #: DesiredAccess of open() when the call gives none
    default_access = FILE_ALL

    def __init__(self, smbd, share: str = "share", user: str = USER, password: str = PASSWORD):
        self.conn = Connection(uuid.uuid4(), smbd.host, smbd.port)
        self.conn.connect(timeout=10)
        self.session = Session(self.conn, user, password)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\{smbd.host}\{share}")
        self.tree.connect()

    def open(self, name: str, access: int | None = None, disposition=CreateDisposition.FILE_OPEN,
             options: int = 0, contexts=None) -> Open:
        """CREATE; the create contexts of the response are on ``.contexts``."""
        o = Open(self.tree, name)
        o.contexts = o.create(ImpersonationLevel.Impersonation,
                              self.default_access if access is None else access,
                              FileAttributes.FILE_ATTRIBUTE_NORMAL, SHARE_ALL, disposition, options,
                              create_contexts=contexts)
        return o

    def status(self, name: str, access: int | None = None, disposition=CreateDisposition.FILE_OPEN,
               options: int = 0) -> int:
        """The NTSTATUS of opening (and closing) *name*: 0 on success."""
        try:
            self.open(name, access, disposition, options).close()
        except SMBResponseException as e:
            return e.status
        return 0

    def send(self, req):
        """One request on the session and tree; the response (raises its error status)."""
        return self.conn.receive(self.conn.send(req, self.session.session_id, self.tree.tree_connect_id))

    def set_sd(self, o: Open, info: int, sd: bytes) -> None:
        """SET_INFO security (MS-SMB2 2.2.39): *info* = OWNER/GROUP/DACL/SACL_SECURITY_INFORMATION bits."""
        req = SMB2SetInfoRequest()
        req["info_type"] = SMB2_0_INFO_SECURITY
        req["file_info_class"] = 0
        req["additional_information"] = info
        req["file_id"] = o.file_id
        req["buffer"] = sd
        self.send(req)

    def query(self, o: Open, info_type: int, info_class: int = 0, additional: int = 0) -> bytes:
        """QUERY_INFO (MS-SMB2 2.2.37): the OutputBuffer."""
        req = SMB2QueryInfoRequest()
        req["info_type"] = info_type
        req["file_info_class"] = info_class
        req["output_buffer_length"] = 4096
        req["additional_information"] = additional
        req["file_id"] = o.file_id
        resp = SMB2QueryInfoResponse()
        resp.unpack(self.send(req)["data"].get_value())
        return resp["buffer"].get_value()

    def close(self) -> None:
        self.conn.disconnect(True)
