"""wsd: a Windows Sockets Direct switch emulator.

Applications use :class:`Switch` and its sockets (:mod:`wsd.api`, blocking;
:mod:`wsd.aio`, asyncio).  Providers plug in through the ``wsd.providers``
entry-point group (:mod:`wsd.registry`); the SPI is :mod:`wsd.spi`; the
protocol cores are sans-IO, in :mod:`wsd.core`.
"""
from . import errors
from .errors import WsaError
from .spi import CF_ACCEPT, CF_REJECT, FD_ACCEPT, FD_CLOSE, FD_CONNECT
from .switch import Switch, SwitchConfig, TraceRecord
from .core.session import SessionConfig

__all__ = ["Switch", "SwitchConfig", "SessionConfig", "TraceRecord", "WsaError", "errors",
           "CF_ACCEPT", "CF_REJECT", "FD_ACCEPT", "FD_CONNECT", "FD_CLOSE"]
__version__ = "0.1.0"
