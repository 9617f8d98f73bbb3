"""Redaction of personal data in prompt text.

Patterns err on the side of redacting: a prompt is labeled and exported many
times, and a false positive costs a few characters while a miss leaks a person's
details into every dataset built from it.
"""

import ipaddress
import re
from collections import Counter

EMAIL = re.compile(r"[A-Za-z0-9_.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by spaces or dashes; kept only if the Luhn checksum holds.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
# A dot before or after counts only when a digit is beyond it: "at 10.0.0.1." ends a sentence, "1.2.3.4.5" is a version.
IPV4 = re.compile(r"(?<!\d)(?<!\d\.)(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\d|\.\d)")
# Candidates for IPv6 addresses: hex groups with two or more colons, checked by the ipaddress module. A
# colon may stand before one ("ip:fe80::1") unless a hex digit or colon precedes it, which would put the
# candidate inside a longer run of groups; a colon after one ends the sentence ("at fe80::1: down").
IPV6 = re.compile(
    r"""
    (?<!\w)(?<![0-9A-Fa-f:]:)
    (?:
        [0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,6}:[0-9A-Fa-f]{1,4}   # ends in a group
      | [0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}::                  # ends in :: (fe80::)
    )
    (?!\w|:[0-9A-Fa-f])
    """,
    re.VERBOSE,
)
# Phone numbers in the shapes people write them: international with a +, a bracketed
# area code, North American 3-3-4 groups, or national numbers that start with 0. Digits
# glued to a word, a time (10:30), a decimal (19.99) or a date (2024-01-15) are left alone; a
# colon, dot or dash beside a number counts only when a digit is beyond it ("tel:555-123-4567:").
PHONE = re.compile(
    r"""
    (?<![\w+])(?<!\d[.:-])(?<!\d\s)
    (?:
        \+\d{1,3}[\s.-]?(?:\(\d{1,5}\)[\s.-]?)?\d{1,5}(?:[\s.-]?\d{1,5}){1,4}
      | (?:1[\s.-])?\(\d{3}\)[\s.-]?\d{3}[\s.-]?\d{4}
      | (?:1[.-])?\d{3}([.-])\d{3}\1\d{4}
      | \d{3}\ \d{3}\ \d{4}
      | 0\d{2,4}[\s-]?\d{3,4}[\s-]?\d{3,4}
    )
    (?!\w|[.:-]\d)
    """,
    re.VERBOSE,
)

PLACEHOLDERS = {"email": "[EMAIL]", "card": "[CARD]", "ssn": "[SSN]", "ip": "[IP]", "phone": "[PHONE]"}


def _luhn_ok(digits):
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_card(match):
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _is_ipv6(match):
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return False
    return True


def _is_phone(match):
    return 9 <= sum(c.isdigit() for c in match.group()) <= 15


# (kind, pattern, check of a match, digits the text needs, what the text must hold): the last two
# skip patterns that cannot match, which is most of them for most prompts. What the text must hold is
# a character, or for IPv4 a digit-dot-digit, since most prompts end a sentence after a number.
_RULES = [
    ("email", EMAIL, None, 0, "@"),
    ("card", CARD, _is_card, 13, ""),
    ("ssn", SSN, None, 9, "-"),
    ("ip", IPV4, None, 4, re.compile(r"\d\.\d")),
    ("ip", IPV6, _is_ipv6, 0, ":"),
    ("phone", PHONE, _is_phone, 9, ""),
]
DIGIT = re.compile(r"\d")


def _holds(text, needed):
    return needed in text if isinstance(needed, str) else needed.search(text) is not None


def redact(text):
    """Return the text with personal data replaced by placeholders, and a Counter of what was replaced."""
    counts = Counter()
    digits = len(DIGIT.findall(text))
    for kind, pattern, accept, min_digits, needed in _RULES:
        if digits < min_digits or not _holds(text, needed):
            continue

        def replace(match, kind=kind, accept=accept):
            if accept is not None and not accept(match):
                return match.group()
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, counts
