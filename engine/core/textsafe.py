"""Make untrusted text safe for a terminal: escape what a terminal would act on.

Authors come from USER/SUDO_USER/SSH_CONNECTION, summaries embed file names, interface names
may hold any byte but '/', ':' and spaces, and files hold whatever they hold. Printed raw, an
ESC clears the screen or sets the title, a newline forges a history line, a bidi override
reorders what the reader sees. `printable` turns each such character into a visible escape.
"""

from __future__ import annotations

import re

# C0 and C1 controls (newline and tab too: one value is one line), DEL, zero-width and bidi
# formatting characters, line/paragraph separators, the BOM, and lone surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """text with every control or invisible formatting character shown as \\xNN or \\uNNNN."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text
