"""The one error type the command line reports as a single line: a problem the user can fix.

Raised where the cause is known (a config key, a weights file, a gallery, an output folder), with a
message that names the thing and what to do; the CLI prints it on one line and exits with status 2
(``--debug`` shows the traceback). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 400


class UserError(Exception):
    """A problem the user can fix; ``str()`` is one line of at most MAX_MESSAGE_CHARS characters."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(message))


class OutputError(UserError):
    """An output that cannot be written (read-only folder, a file in the way, disk full)."""


def output_error(path: object, exc: OSError) -> OutputError:
    """One line for an OSError while writing ``path``: what failed and why, without the errno number."""
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (long values are cut in the middle)."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    keep = (limit - 5) // 2
    return f"{line[:keep]} ... {line[-keep:]}"


def unpickling_reason(exc: BaseException) -> str:
    """torch's forty-line weights-only advice, or pickle's message, as one clause."""
    text = str(exc)
    found = re.search(r"unsupported GLOBAL ([\w.]+)", text, re.IGNORECASE) or re.search(r"global '?([\w.]+)'? was not", text)
    if found:
        return f"the file references {found.group(1)}, which a weights file never needs (unpickling it could run code)"
    return f"not a loadable weights file ({type(exc).__name__}: {text.strip().splitlines()[-1] if text.strip() else 'truncated'})"
