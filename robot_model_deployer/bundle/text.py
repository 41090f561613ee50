"""Archive-supplied text made safe to show: printable, one line, bounded.

Names and values from a bundle end up in terminals, logs, the store's history
and ROS messages. Control characters could rewrite an operator's terminal,
bidi overrides could make a name read as another, and a lone surrogate breaks
UTF-8 encoders downstream; a megabyte-long name would flood them all. So every
such string passes through here before it is shown.
"""
from __future__ import annotations

MAX_SHOWN_CHARS = 80
MAX_MESSAGE_CHARS = 600


def printable(text: str) -> str:
    """``text`` with every non-printable character (C0, C1, bidi controls, surrogates, ...) escaped."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """A hostile value for an error message: printable and at most about ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return printable(text)


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message as one printable line of at most ``limit`` characters (for logs, history, ROS)."""
    text = printable(message)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
