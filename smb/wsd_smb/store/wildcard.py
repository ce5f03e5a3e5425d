"""Name matching for directory enumeration: MS-FSA 2.1.4.4 (IsNameInExpression) with
the DOS wildcards of MS-FSA 2.1.4.3 / FsRtlIsNameInExpression:

* ``*``  any sequence of characters (also empty);
* ``?``  exactly one character;
* ``>``  DOS_QM: one character, or nothing when at a period or at the end of the
  name (so a run of ``>`` before ``.`` or the end can match fewer characters);
* ``<``  DOS_STAR: any sequence not reaching past the final period of the name; it
  may consume that final period itself (``<`` alone matches names without a period);
* ``"``  DOS_DOT: a period, or nothing at the end of the name.

Matching is case-insensitive (``str.casefold``), as on Windows and Samba's default.
"""
from __future__ import annotations

from functools import lru_cache

WILDCARDS = frozenset("*?<>\"")


def has_wildcards(pattern: str) -> bool:
    return any(c in WILDCARDS for c in pattern)


def is_name_in_expression(name: str, expression: str, ignore_case: bool = True) -> bool:
    """True if *name* matches *expression* (see module docstring)."""
    if expression in ("", "*"):
        return True
    if ignore_case:
        name = name.casefold()
        expression = expression.casefold()
    if not has_wildcards(expression):
        return name == expression
    return _match(name, expression)


@lru_cache(maxsize=4096)
def _match(name: str, expr: str) -> bool:
    n, m = len(name), len(expr)
    last_dot = name.rfind(".")
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        r = memo.get(key)
        if r is not None:
            return r
        if i == m:
            r = j == n
        else:
            c = expr[i]
            if c == "*":
                r = any(go(i + 1, k) for k in range(j, n + 1))
            elif c == "?":
                r = j < n and go(i + 1, j + 1)
            elif c == ">":
                if j < n and name[j] != ".":
                    r = go(i + 1, j + 1)
                else:
                    r = go(i + 1, j)
            elif c == "<":
                # may stop anywhere up to the final period, or just after consuming it
                limit = n if last_dot < j else last_dot
                r = any(go(i + 1, k) for k in range(j, limit + 1))
                if not r and last_dot >= j:
                    r = go(i + 1, last_dot + 1)
            elif c == '"':
                if j < n and name[j] == ".":
                    r = go(i + 1, j + 1)
                else:
                    r = j == n and go(i + 1, j)
            else:
                r = j < n and name[j] == c and go(i + 1, j + 1)
        memo[key] = r
        return r

    return go(0, 0)
