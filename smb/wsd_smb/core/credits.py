"""Connection.CommandSequenceWindow (MS-SMB2 3.3.1.1, 3.3.1.2, 3.3.5.2.3)."""
from __future__ import annotations


class CommandSequenceWindow:
    """The set of MessageIds the client may use: [low, high) minus the ids already used.

    The window starts as {0}; each granted credit extends it by one id; each request
    consumes CreditCharge consecutive ids (MS-SMB2 3.3.5.2.3)."""

    def __init__(self, max_credits: int = 8192):
        self.low = 0
        self.high = 1
        self.used: set[int] = set()
        self.max_credits = max_credits

    @property
    def available(self) -> int:
        """Credits the client holds (ids it may still use)."""
        return self.high - self.low - len(self.used)

    def consume(self, message_id: int, charge: int) -> bool:
        """Consume ids message_id .. message_id+charge-1; False if any is outside the window
        or already used (the caller must then drop the connection)."""
        charge = max(1, charge)
        if message_id < self.low or message_id + charge > self.high:
            return False
        ids = range(message_id, message_id + charge)
        if any(i in self.used for i in ids):
            return False
        self.used.update(ids)
        while self.low in self.used:
            self.used.discard(self.low)
            self.low += 1
        return True

    def grant(self, requested: int, charge: int = 1) -> int:
        """Credits to grant in a response (MS-SMB2 3.3.1.2): what was asked for, at least
        one when the client would otherwise run dry, bounded by max_credits."""
        requested = max(requested, 1 if self.available == 0 else 0)
        room = max(0, self.max_credits - self.available)
        g = min(requested, room)
        if g == 0 and self.available == 0:
            g = 1
        self.high += g
        return g
