"""Minimal TREE_CONNECT / TREE_DISCONNECT (MS-SMB2 3.3.5.7, 3.3.5.8).

These let clients reach IPC$ and disk shares before the file-command layer
(core/files.py) registers its own, fuller handlers, which replace these.
"""
from __future__ import annotations

from .. import ntstatus
from ..wire import (SMB2_SHARE_TYPE_DISK, SMB2_SHARE_TYPE_PIPE, SMB2_SHAREFLAG_ENCRYPT_DATA,
                    SMB2_SHAREFLAG_NO_CACHING, Command, TreeConnectRequest, TreeConnectResponse,
                    TreeDisconnectRequest, TreeDisconnectResponse)
from .dispatch import RequestContext, Response, register


def share_name_of(path: bytes) -> str:
    """"\\\\server\\share" (UTF-16LE) -> "share"; bad path -> STATUS_BAD_NETWORK_NAME."""
    try:
        text = path.decode("utf-16-le")
    except UnicodeDecodeError:
        raise ntstatus.StatusBadNetworkName("path not UTF-16") from None
    parts = text.lstrip("\\").split("\\")
    if len(parts) != 2 or not parts[1]:
        raise ntstatus.StatusBadNetworkName(text)
    return parts[1]


@register(Command.SMB2_TREE_CONNECT, blocking=False, needs_tree=False)
def tree_connect(ctx: RequestContext, req: TreeConnectRequest) -> Response:
    share = ctx.config.share(share_name_of(req.path))
    if share is None:
        raise ntstatus.StatusBadNetworkName()
    if share.current_uses >= share.max_uses:
        raise ntstatus.NtStatusError(ntstatus.STATUS_REQUEST_NOT_ACCEPTED)
    tc = ctx.session.add_tree_connect(share, ctx.now)
    ctx.header.tree_id = tc.tree_id  # the core puts this TreeId in the response header
    flags = SMB2_SHAREFLAG_NO_CACHING
    if share.encrypt_data and ctx.connection.dialect >= 0x0300:
        flags |= SMB2_SHAREFLAG_ENCRYPT_DATA
    return Response(TreeConnectResponse(
        share_type=SMB2_SHARE_TYPE_PIPE if share.type == "pipe" else SMB2_SHARE_TYPE_DISK,
        share_flags=flags, capabilities=0, maximal_access=tc.maximal_access))


@register(Command.SMB2_TREE_DISCONNECT, blocking=True)
def tree_disconnect(ctx: RequestContext, req: TreeDisconnectRequest) -> Response:
    tc = ctx.session.remove_tree_connect(ctx.tree_connect.tree_id)
    if tc is not None:
        for hook in list(ctx.server.on_tree_disconnected):
            hook(tc)
    return Response(TreeDisconnectResponse())
