"""Create context data (MS-SMB2 2.2.13.2.x requests, 2.2.14.2.x responses).

A create context on the wire is a :class:`~wsd_smb.wire.commands.CreateContext` (name +
data); the classes here are the layouts of its *data* for each context name, packed with
``pack(0)`` and parsed with ``unpack(data, 0)``.  ``CONTEXT_NAMES`` maps the 4-byte (or
16-byte GUID) names to the request/response classes.
"""
from __future__ import annotations

from .base import FILEID, GUID, U16, U32, U64, Bytes, F, Plain

# Context names, MS-SMB2 2.2.13.2
SMB2_CREATE_EA_BUFFER = b"ExtA"
SMB2_CREATE_SD_BUFFER = b"SecD"
SMB2_CREATE_DURABLE_HANDLE_REQUEST = b"DHnQ"
SMB2_CREATE_DURABLE_HANDLE_RECONNECT = b"DHnC"
SMB2_CREATE_ALLOCATION_SIZE = b"AlSi"
SMB2_CREATE_QUERY_MAXIMAL_ACCESS_REQUEST = b"MxAc"
SMB2_CREATE_TIMEWARP_TOKEN = b"TWrp"
SMB2_CREATE_QUERY_ON_DISK_ID = b"QFid"
SMB2_CREATE_REQUEST_LEASE = b"RqLs"
SMB2_CREATE_REQUEST_LEASE_V2 = b"RqLs"
SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2 = b"DH2Q"
SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2 = b"DH2C"
SMB2_CREATE_APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")
SMB2_CREATE_APP_INSTANCE_VERSION = bytes.fromhex("B982D0B73B56074FA07B524A8116A010")
SVHDX_OPEN_DEVICE_CONTEXT = bytes.fromhex("9CCBCF9E04C1E643980E158DA1F6EC83")

# Flags
SMB2_DHANDLE_FLAG_PERSISTENT = 0x00000002
SMB2_LEASE_FLAG_BREAK_IN_PROGRESS = 0x00000002
SMB2_LEASE_FLAG_PARENT_LEASE_KEY_SET = 0x00000004


class DurableHandleRequest(Plain):
    """SMB2_CREATE_DURABLE_HANDLE_REQUEST (DHnQ), MS-SMB2 2.2.13.2.3: 16 reserved bytes."""

    FIELDS = (F("DurableRequest", Bytes(16), b"\0" * 16, reserved=True, ignore=True),)


class DurableHandleResponse(Plain):
    """SMB2_CREATE_DURABLE_HANDLE_RESPONSE (DHnQ), MS-SMB2 2.2.14.2.3: 8 reserved bytes."""

    FIELDS = (F("Reserved", U64, 0, reserved=True),)


class DurableHandleReconnect(Plain):
    """SMB2_CREATE_DURABLE_HANDLE_RECONNECT (DHnC), MS-SMB2 2.2.13.2.4: the FileId to reconnect."""

    FIELDS = (F("Data", FILEID),)


class QueryMaximalAccessRequest(Plain):
    """SMB2_CREATE_QUERY_MAXIMAL_ACCESS_REQUEST (MxAc), MS-SMB2 2.2.13.2.5: optional Timestamp
    (the data may also be empty; parse only when 8 bytes are present)."""

    FIELDS = (F("Timestamp", U64),)


class QueryMaximalAccessResponse(Plain):
    """SMB2_CREATE_QUERY_MAXIMAL_ACCESS_RESPONSE (MxAc), MS-SMB2 2.2.14.2.5."""

    FIELDS = (F("QueryStatus", U32), F("MaximalAccess", U32))


class AllocationSize(Plain):
    """SMB2_CREATE_ALLOCATION_SIZE (AlSi), MS-SMB2 2.2.13.2.6."""

    FIELDS = (F("AllocationSize", U64),)


class TimewarpToken(Plain):
    """SMB2_CREATE_TIMEWARP_TOKEN (TWrp), MS-SMB2 2.2.13.2.7: FILETIME of the snapshot."""

    FIELDS = (F("Timestamp", U64),)


class QueryOnDiskIdResponse(Plain):
    """SMB2_CREATE_QUERY_ON_DISK_ID response (QFid), MS-SMB2 2.2.14.2.9 (32 bytes):
    DiskFileId(8), VolumeId(8), Reserved(16)."""

    FIELDS = (F("DiskFileId", U64), F("VolumeId", U64), F("Reserved", Bytes(16), b"\0" * 16, reserved=True))


class LeaseRequest(Plain):
    """SMB2_CREATE_REQUEST_LEASE (RqLs, version 1), MS-SMB2 2.2.13.2.8 (32 bytes); the
    response (2.2.14.2.10) has the same layout."""

    FIELDS = (
        F("LeaseKey", GUID, b"\0" * 16),
        F("LeaseState", U32),
        F("LeaseFlags", U32),
        F("LeaseDuration", U64, 0, reserved=True, ignore=True),
    )


class LeaseRequestV2(Plain):
    """SMB2_CREATE_REQUEST_LEASE_V2 (RqLs, version 2), MS-SMB2 2.2.13.2.10 (52 bytes); the
    response (2.2.14.2.11) has the same layout."""

    FIELDS = (
        F("LeaseKey", GUID, b"\0" * 16),
        F("LeaseState", U32),
        F("Flags", U32),
        F("LeaseDuration", U64, 0, reserved=True, ignore=True),
        F("ParentLeaseKey", GUID, b"\0" * 16),
        F("Epoch", U16),
        F("Reserved", U16, 0, reserved=True, ignore=True),
    )


LeaseResponse = LeaseRequest
LeaseResponseV2 = LeaseRequestV2


class DurableHandleRequestV2(Plain):
    """SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2 (DH2Q), MS-SMB2 2.2.13.2.11 (32 bytes)."""

    FIELDS = (
        F("Timeout", U32),
        F("Flags", U32),
        F("Reserved", U64, 0, reserved=True, ignore=True),
        F("CreateGuid", GUID, b"\0" * 16),
    )


class DurableHandleResponseV2(Plain):
    """SMB2_CREATE_DURABLE_HANDLE_RESPONSE_V2 (DH2Q), MS-SMB2 2.2.14.2.12 (8 bytes)."""

    FIELDS = (F("Timeout", U32), F("Flags", U32))


class DurableHandleReconnectV2(Plain):
    """SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2 (DH2C), MS-SMB2 2.2.13.2.12 (36 bytes)."""

    FIELDS = (
        F("FileId", FILEID),
        F("CreateGuid", GUID, b"\0" * 16),
        F("Flags", U32),
    )


class AppInstanceId(Plain):
    """SMB2_CREATE_APP_INSTANCE_ID, MS-SMB2 2.2.13.2.13 (StructureSize 20)."""

    FIELDS = (
        F("StructureSize", U16, 20, reserved=True),
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("AppInstanceId", GUID, b"\0" * 16),
    )


class AppInstanceVersion(Plain):
    """SMB2_CREATE_APP_INSTANCE_VERSION, MS-SMB2 2.2.13.2.15 (StructureSize 24)."""

    FIELDS = (
        F("StructureSize", U16, 24, reserved=True),
        F("Reserved", U16, 0, reserved=True, ignore=True),
        F("Padding", U32, 0, reserved=True, ignore=True),
        F("AppInstanceVersionHigh", U64),
        F("AppInstanceVersionLow", U64),
    )


def lease_request_from(data: bytes) -> LeaseRequest | LeaseRequestV2:
    """RqLs data is version 1 (32 bytes) or version 2 (52 bytes), MS-SMB2 3.3.5.9.8/11."""
    from ..ntstatus import StatusInvalidParameter

    if len(data) >= LeaseRequestV2.FIXED_SIZE:
        return LeaseRequestV2.unpack(data, 0)
    if len(data) >= LeaseRequest.FIXED_SIZE:
        return LeaseRequest.unpack(data, 0)
    raise StatusInvalidParameter("RqLs context too short")


#: name -> (request data class, response data class)
CONTEXT_NAMES: dict[bytes, tuple[type[Plain] | None, type[Plain] | None]] = {
    SMB2_CREATE_DURABLE_HANDLE_REQUEST: (DurableHandleRequest, DurableHandleResponse),
    SMB2_CREATE_DURABLE_HANDLE_RECONNECT: (DurableHandleReconnect, None),
    SMB2_CREATE_QUERY_MAXIMAL_ACCESS_REQUEST: (QueryMaximalAccessRequest, QueryMaximalAccessResponse),
    SMB2_CREATE_ALLOCATION_SIZE: (AllocationSize, None),
    SMB2_CREATE_TIMEWARP_TOKEN: (TimewarpToken, None),
    SMB2_CREATE_QUERY_ON_DISK_ID: (None, QueryOnDiskIdResponse),
    SMB2_CREATE_REQUEST_LEASE: (LeaseRequest, LeaseResponse),
    SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2: (DurableHandleRequestV2, DurableHandleResponseV2),
    SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2: (DurableHandleReconnectV2, None),
    SMB2_CREATE_APP_INSTANCE_ID: (AppInstanceId, None),
    SMB2_CREATE_APP_INSTANCE_VERSION: (AppInstanceVersion, None),
}
