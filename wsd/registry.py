"""Finding providers: the ``wsd.providers`` entry-point group.

Any installed distribution can add a provider by declaring, in its own
metadata::

    [project.entry-points."wsd.providers"]
    myfabric = "mypkg:MyProvider"

The environment variable ``WSD_PROVIDERS`` (``name=module:Class,...``) adds or
overrides entries; it is how a tree that is not installed (the softRoCE VM
runs the project from a 9p mount) still finds its providers.
"""
from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from . import errors
from .spi import ServiceProvider

GROUP = "wsd.providers"


def provider_entry_points() -> dict[str, str]:
    """name -> "module:Class" for every registered provider."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    extra = os.environ.get("WSD_PROVIDERS", "")
    for item in filter(None, (x.strip() for x in extra.split(","))):
        name, _, target = item.partition("=")
        if target:
            found[name.strip()] = target.strip()
    return found


def load_provider_class(name: str) -> type[ServiceProvider]:
    eps = provider_entry_points()
    if name not in eps:
        raise errors.WSAEPROVIDERFAILEDINIT(f"no provider {name!r} in entry-point group {GROUP} "
                                            f"(known: {', '.join(sorted(eps)) or 'none'})")
    module, _, attr = eps[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise errors.WSAEPROVIDERFAILEDINIT(f"provider {name!r} cannot be imported: {e}") from None
    cls = getattr(mod, attr)
    if not (isinstance(cls, type) and issubclass(cls, ServiceProvider)):
        raise errors.WSAEPROVIDERFAILEDINIT(f"{eps[name]} is not a ServiceProvider")
    return cls


def create_provider(name: str, **options) -> ServiceProvider:
    return load_provider_class(name)(**options)
