"""Input limits and the bounded formatting of values in error messages.

The limits (README, "Input limits") are refused with an exit-2 message naming the file and
the field.  The formatting functions never build more than a few hundred characters, whatever
the value: a list of a million numbers, a value shared a billion times over by YAML aliases,
an integer of 10^5 digits or a string of terminal escape codes all print as one short line.
"""
from __future__ import annotations

import json
import math
import re
from typing import List, Optional

#: bytes read from a scenario or study file (a scenario is a few kilobytes)
MAX_FILE_BYTES = 1 << 20
#: values in a YAML document once its aliases are expanded
MAX_YAML_VALUES = 100_000
#: nesting depth of YAML values (a scenario needs about 5)
MAX_YAML_DEPTH = 64
#: dose levels in a scenario
MAX_DOSES = 100
#: simulated trials per run (file and command line)
MAX_TRIALS = 10**9
#: largest seed (numpy SeedSequence entropy is read as an unsigned 64-bit word)
MAX_SEED = 2**63 - 1
#: parallel jobs (file and command line)
MAX_JOBS = 1024
#: problems listed per file (the rest are counted)
MAX_PROBLEMS = 50
_MAX_REPR_DEPTH = 20
_MAX_MESSAGE = 300


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, keep_newlines: bool = True) -> str:
    """``text`` with control characters (terminal escape codes, bells ...) written as
    ``\\xNN`` escapes, so printing it cannot drive the terminal.  Tabs and, with
    ``keep_newlines``, newlines are kept."""
    pat = _CONTROL if keep_newlines else _CONTROL_ALL
    return pat.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def short(v, limit: int = 80) -> str:
    """``v`` for an error message, at most ``limit`` characters: strings as ``repr``, the
    rest JSON-like.  Never builds more than ``limit`` characters, so a huge value (a list of
    a million numbers, a YAML alias bomb, an integer of 10^5 digits) costs nothing."""
    if isinstance(v, str):
        s = repr(v[:limit])
    elif isinstance(v, float) and not math.isfinite(v):
        s = str(v)
    else:
        s = json_like(v, limit + 1)
    return s if len(s) <= limit else s[:limit - 3] + "..."


class _Full(Exception):
    """The bounded writer has its characters."""


def json_like(v, limit: int = 10_000) -> str:
    """JSON-like text of ``v`` (what ``json.dumps(v, default=str)`` writes), cut once it
    reaches ``limit`` characters: it walks the value and stops there, never serializing the
    whole of a large or deeply shared value."""
    out: List[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text)
        if size >= limit:
            raise _Full

    def scalar(x) -> str:
        if x is None:
            return "null"
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, int):
            if x.bit_length() > 256:
                return f"<integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
            return str(x)
        if isinstance(x, float):
            return json.dumps(x)
        if not isinstance(x, str):
            x = str(x)[:limit]  # dates, bytes ...: as json.dumps(default=str)
        return json.dumps(x[:limit])

    def walk(x, depth: int) -> None:
        if depth > _MAX_REPR_DEPTH and isinstance(x, (dict, list, tuple)):
            emit("...")
        elif isinstance(x, dict):
            emit("{")
            for i, (k, val) in enumerate(x.items()):
                key = k if isinstance(k, str) else scalar(k).strip('"')
                emit((", " if i else "") + json.dumps(key[:limit]) + ": ")
                walk(val, depth + 1)
            emit("}")
        elif isinstance(x, (list, tuple)):
            emit("[")
            for i, val in enumerate(x):
                if i:
                    emit(", ")
                walk(val, depth + 1)
            emit("]")
        else:
            emit(scalar(x))

    try:
        walk(v, 0)
    except _Full:
        pass
    return "".join(out)[:limit]


def check_word(v: str, shown: Optional[str] = None) -> str:
    """``v`` without surrounding spaces, which must be a non-empty word of letters, digits,
    '_' or '-' (a name used in column labels); the error quotes ``shown`` (default: the
    stripped value)."""
    s = v.strip()
    if not s or not all(c.isalnum() or c in "_-" for c in s):
        got = s if shown is None else shown
        raise ValueError(f"must be a non-empty word of letters, digits, '_' or '-' "
                         f"(got {got!r})")
    return s


class ScenarioError(Exception):
    """All the problems found in one scenario file (defined here, beside the formatting it
    uses, so that the command line can catch it without importing the scenario model)."""

    def __init__(self, source: str, problems: List[str]):
        self.source = source
        self.problems = problems
        shown = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:
            shown = shown + [f"... and {len(problems) - MAX_PROBLEMS:,} more problems"]
        # one line per problem, whatever a message holds (a key with a newline ...)
        super().__init__("\n".join(printable(f"{source}: {p}", keep_newlines=False)
                                   for p in shown))
