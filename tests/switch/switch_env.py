"""What the switch tests parametrize over (a uniquely named module: other test folders have conftests too)."""
from __future__ import annotations

import wsd
from wsd.registry import create_provider, provider_entry_points


def available_san_providers() -> list[str]:
    """Every registered SAN provider that can run on this machine (zmq, shm; verbs in the softRoCE VM)."""
    out = []
    for name in sorted(provider_entry_points()):
        if name == "tcp":
            continue
        try:
            p = create_provider(name)
        except wsd.WsaError:
            continue
        if p.is_san and p.availability().ok:
            out.append(name)
    return out


SAN = available_san_providers()
ALL = ["tcp"] + SAN


def table_for(provider: str):
    return [] if provider == "tcp" else [("127.0.0.0/8", provider)]
