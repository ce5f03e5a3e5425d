"""Replay detection (SMB 3.x): the channel sequence of an open (MS-SMB2 3.3.5.2.10) and
the CREATEs still waiting for oplock/lease breaks whose replays are answered at once.

Channel sequence (3.3.5.2.10), for every request of a 3.x connection that names an open
by its FileId, before the command runs (core/connection.py):

* Open.ChannelSequence (set by the CREATE from the request's header), and the counts
  Open.OutstandingRequestCount (requests of the current ChannelSequence not yet
  answered) and Open.OutstandingPreRequestCount (those of older ChannelSequences).
* Without SMB2_FLAGS_REPLAY_OPERATION: the same ChannelSequence counts the request;
  a newer one (the 16-bit difference ``(request - open) mod 2**16`` is at most 0x7FFF)
  moves the outstanding count to the "pre" count, counts the request and becomes
  Open.ChannelSequence; an older one fails WRITE, SET_INFO and IOCTL with
  STATUS_FILE_NOT_AVAILABLE (other commands proceed uncounted).
* With the flag: the same ChannelSequence is counted only while
  Open.OutstandingPreRequestCount is zero (no request of an older channel generation in
  flight), else WRITE, SET_INFO and IOCTL fail with STATUS_FILE_NOT_AVAILABLE; a newer
  one (the SHOULD) moves the counts and becomes Open.ChannelSequence as above, and is
  counted if the "pre" count is then zero, else OutstandingRequestCount becomes 0 and
  WRITE, SET_INFO and IOCTL fail with STATUS_FILE_NOT_AVAILABLE.
* When the response is sent (3.3.4.1) the request's count is given back: to
  OutstandingRequestCount if Open.ChannelSequence is still the one it was counted
  under, else to OutstandingPreRequestCount.  "Still the one" is decided by a
  generation number that moves with every change of Open.ChannelSequence, not by
  comparing sequence numbers: a request counted under ChannelSequence 0 that is
  answered after the open went 0 -> 30000 -> 60000 -> 0 belongs to the "pre" count
  (smbtorture smb2.replay.replay7; comparing numbers would underflow the count).
* Any such request also ends Open.IsReplayEligible (3.3.5.21 and its siblings): a
  later replayed CREATE with the open's CreateGuid no longer finds it
  (smbtorture smb2.replay.replay6).

Pending CREATEs (:class:`PendingCreates`): a CREATE with a durable v2 request
(SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2) that went async to wait for oplock or lease
breaks is recorded under (ClientGuid, CreateGuid) until it completes.  A replay of it
(SMB2_FLAGS_REPLAY_OPERATION, same ClientGuid and CreateGuid) is answered at once with
STATUS_FILE_NOT_AVAILABLE, which tells the client to replay again later; MS-SMB2 has no
rule for this case (the open is not in GlobalOpenTable yet), Windows executes the
replay as a new open (it waits for the same breaks and fails with
STATUS_SHARING_VIOLATION or STATUS_ACCESS_DENIED), Samba answers
STATUS_FILE_NOT_AVAILABLE; this server does as Samba (smbtorture smb2.replay
dhv2-pending*-sane pass, their -windows twins fail; Samba bug 14449).
"""
from __future__ import annotations

import threading
from typing import Any

from ..ntstatus import STATUS_FILE_NOT_AVAILABLE, NtStatusError
from ..wire.header import Command

#: the commands 3.3.5.2.10 fails with STATUS_FILE_NOT_AVAILABLE on a stale ChannelSequence
MODIFYING_COMMANDS = frozenset({Command.SMB2_WRITE, Command.SMB2_SET_INFO, Command.SMB2_IOCTL})

_lock = threading.Lock()


class Counted:
    """The count one request added to its open (released once, by whoever answers it)."""

    __slots__ = ("open", "generation", "released")

    def __init__(self, o: Any, generation: int) -> None:
        self.open = o
        self.generation = generation
        self.released = False


def _newer_or_equal(request_cs: int, open_cs: int) -> bool:
    """The unsigned 16-bit difference ``request - open`` is at most 0x7FFF."""
    return ((request_cs - open_cs) & 0xFFFF) <= 0x7FFF


def verify_channel_sequence(o: Any, command: int, channel_sequence: int, replay: bool) -> Counted | None:
    """MS-SMB2 3.3.5.2.10 for a request naming *o* (the caller checks the dialect is 3.x).
    Returns the count to release when the request is answered (None: not counted);
    raises STATUS_FILE_NOT_AVAILABLE for a stale WRITE/SET_INFO/IOCTL.  Also ends
    Open.IsReplayEligible of a non-persistent open."""
    with _lock:
        if not getattr(o, "is_persistent", False):
            o.is_replay_eligible = False
        current = getattr(o, "channel_sequence", 0)
        pre = getattr(o, "outstanding_pre_request_count", 0)
        count = getattr(o, "outstanding_request_count", 0)
        generation = getattr(o, "channel_generation", 0)
        if channel_sequence == current:
            if not replay or pre == 0:
                o.outstanding_request_count = count + 1
                return Counted(o, generation)
        elif _newer_or_equal(channel_sequence, current):
            pre += count
            o.outstanding_pre_request_count = pre
            o.channel_sequence = channel_sequence
            o.channel_generation = generation + 1
            if not replay or pre == 0:
                o.outstanding_request_count = 1
                return Counted(o, generation + 1)
            # a replay while requests of older channel generations are outstanding (the SHOULD)
            o.outstanding_request_count = 0
    if command in MODIFYING_COMMANDS:
        raise NtStatusError(STATUS_FILE_NOT_AVAILABLE,
                            f"ChannelSequence 0x{channel_sequence:04x}, open's 0x{current:04x}"
                            f"{' (replay, older requests outstanding)' if replay else ''}")
    return None


def release(c: Counted | None) -> None:
    """The request counted by *c* was answered (or will never be): give its count back."""
    if c is None:
        return
    with _lock:
        if c.released:
            return
        c.released = True
        o = c.open
        if c.generation == getattr(o, "channel_generation", 0):
            o.outstanding_request_count = max(0, getattr(o, "outstanding_request_count", 0) - 1)
        else:
            o.outstanding_pre_request_count = max(0, getattr(o, "outstanding_pre_request_count", 0) - 1)


class PendingCreates:
    """(ClientGuid, CreateGuid) of the durable v2 CREATEs waiting for breaks (see the
    module docstring).  Thread-safe; an entry goes when its operation completes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[bytes, bytes], int] = {}

    def is_pending(self, client_guid: bytes, create_guid: bytes) -> bool:
        with self._lock:
            return (bytes(client_guid), bytes(create_guid)) in self._pending

    def hold(self, client_guid: bytes, create_guid: bytes, op: Any) -> None:
        """Record the CREATE that went async as *op* (dispatch.AsyncOp) until it is done."""
        key = (bytes(client_guid), bytes(create_guid))
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1

        def done() -> None:
            with self._lock:
                n = self._pending.get(key, 0) - 1
                if n > 0:
                    self._pending[key] = n
                else:
                    self._pending.pop(key, None)

        op.when_done(done)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


__all__ = ["Counted", "PendingCreates", "MODIFYING_COMMANDS", "verify_channel_sequence", "release"]
