"""Wire error codes as exception classes: the one registry behind ``NtStatusError``
(NTSTATUS, MS-ERREF 2.3) and ``Win32Error`` (Win32/NERR, MS-ERREF 2.2).

A *root* class (``class NtStatusError(CodedError, root=True)``) owns a registry
code -> subclass.  ``Root(code)`` returns an instance of the registered subclass for
*code* (or of the root itself for an unknown code); ``Sub()`` carries ``Sub.code``.
The instance's ``status`` is the code and ``message`` the optional text.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar


class CodedError(Exception):
    code: ClassVar[int] = 0
    _registry: ClassVar[dict[int, type["CodedError"]]]
    _root: ClassVar[type["CodedError"]]

    def __init_subclass__(cls, root: bool = False, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if root:
            cls._registry = {}
            cls._root = cls

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is cls._root and args and isinstance(args[0], int):
            sub = cls._registry.get(args[0])
            if sub is not None:
                return Exception.__new__(sub)
        return Exception.__new__(cls)

    def __init__(self, *args: Any, message: str | None = None):
        if args and isinstance(args[0], int):
            code, args = args[0], args[1:]
        else:
            code = type(self).code
        self.status = code
        self.message = message or (args[0] if args else "")
        super().__init__(code, self.message)

    @classmethod
    def define(cls, codes: dict[str, int], class_name: Callable[[str], str], namespace: dict[str, Any],
               doc: Callable[[str, int], str], skip: Callable[[int], bool] = lambda v: False) -> None:
        """One subclass of this root per code (the first name of a value wins), bound in
        *namespace* under ``class_name(NAME)``."""
        for name, value in codes.items():
            if value in cls._registry or skip(value):
                continue
            sub = type(class_name(name), (cls,), {"code": value, "__doc__": doc(name, value),
                                                  "__module__": namespace.get("__name__", cls.__module__)})
            cls._registry[value] = sub
            namespace[sub.__name__] = sub
