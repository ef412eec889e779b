"""PII scrubbing: e-mail addresses, phone numbers, IP addresses and API-key-like secrets.

Each match is replaced by a marker (`<EMAIL>`, `<PHONE>`, `<IP>`, `<SECRET>`) and is counted by
kind. The patterns are written not to fire on ordinary code: phone numbers need separators
between digit groups (so `1234567890` or `0x7fffffff` stay), IP addresses are confirmed by
`ipaddress`, and secrets are either well-known key shapes or long values assigned to names
such as `api_key`, `token`, `secret` or `password`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
_PHONE = re.compile(
    r"(?<![\w.:/-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
    r"\d{3,4}[ .-]\d{3,4}(?![\w.:/-])"
)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}(?:::?[0-9A-Fa-f]{1,4})*(?![\w:])"
)
_KEY_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35})\b"
)
_ASSIGNED = re.compile(
    r"(?i)(\b[\w-]*(?:api[_-]?key|secret|token|password|passwd|access[_-]?key)[\w-]*\b[\"']?\s*[:=]\s*[\"'])"
    r"([A-Za-z0-9_+/=.-]{16,})([\"'])"
)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def scrub(text: str, counts: Counter[str]) -> str:
    """Replace PII in `text` with markers, adding what was found to `counts`."""

    def sub(
        pattern: re.Pattern[str], kind: str, marker: str, text: str, check: bool = False
    ) -> str:
        def repl(match: re.Match[str]) -> str:
            if check and not _is_ip(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return marker

        return pattern.sub(repl, text)

    text = sub(_KEY_SHAPES, "secret", "<SECRET>", text)

    def assigned(match: re.Match[str]) -> str:
        counts["secret"] += 1
        return f"{match.group(1)}<SECRET>{match.group(3)}"

    text = _ASSIGNED.sub(assigned, text)
    text = sub(_EMAIL, "email", "<EMAIL>", text)
    text = sub(_IPV6, "ip", "<IP>", text, check=True)
    text = sub(_IPV4, "ip", "<IP>", text, check=True)
    return sub(_PHONE, "phone", "<PHONE>", text)
