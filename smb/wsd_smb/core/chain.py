"""The state of one compound chain while the connection works through it (MS-SMB2
3.3.5.2.7): the request elements, the responses built so far, what related requests
inherit."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ntstatus import STATUS_SUCCESS
from ..buffers import HeadroomBuffer
from ..wire.base import FileId
from ..wire.header import Smb2Header
from .state import Session


# ------------------------------------------------------------------ chain state
@dataclass
class _Element:
    header: Smb2Header  # request header (session/tree ids after inheritance)
    raw: bytes | bytearray  # request bytes of this element (header .. end incl. padding)
    start: int
    end: int


def _in_headroom(o: "_Out") -> bytearray | None:
    """The whole message built in place when the body ends with a payload read into a
    :class:`HeadroomBuffer` whose headroom fits the header and the rest of the body exactly
    (a READ response): header and fixed part go into the headroom, the payload is not copied."""
    body = o.body
    if type(body) is not list or not body:
        return None
    payload = body[-1]
    if type(payload) is not memoryview or not isinstance(payload.obj, HeadroomBuffer):
        return None
    buf = payload.obj
    front = b"".join([o.header.pack(), *body[:-1]])
    if len(front) != buf.headroom or len(buf) != buf.headroom + len(payload):
        return None
    buf[:len(front)] = front
    return buf


@dataclass
class _Out:
    """One response element before compound assembly."""

    header: Smb2Header
    body: bytes
    session: Session | None = None
    sign: bool = False
    after_pack: Callable[[bytes], None] | None = None  # preauth hash update of SESSION_SETUP
    sign_key: bytes | None = None  # sign with this key instead of the session's (failed binds)
    sign_algorithm: int | None = None  # ... and with this algorithm (a refused bind: the session's)


@dataclass
class _Chain:
    elements: list[_Element]
    encrypted: bool
    encrypt_session: Session | None = None
    index: int = 0
    out: list[_Out] = field(default_factory=list)
    last_session_id: int | None = 0  # None: the previous element had no valid session
    last_tree_id: int | None = 0  # None: the previous element had no valid tree connect
    last_file_id: FileId | None = None
    create_error: int = STATUS_SUCCESS  # status of the chain's last failed CREATE
    last_status: int = STATUS_SUCCESS
    pending: tuple | None = None  # (element, handler, ctx, req) while a Work is outstanding
