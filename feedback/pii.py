"""PII detection and redaction: nothing personal may reach a training snapshot.

Every text that can become training data (logged and served messages, feedback corrections,
dataset records) passes through `pii_redact` *before* it is stored, so the training compiler only
ever reads redacted text. Only the counts of what was redacted are kept, never the values.

Detectors are checked, not just shaped, so ordinary numbers survive ("500mg", "9am-6pm", "$49.99",
order numbers): card numbers must pass Luhn, IBANs mod-97, Finnish henkilötunnus its check
character, and phone numbers must be valid numbers for a region (the `phonenumbers` matcher at
`Leniency.VALID`). Order matters: each detector runs on the text the previous ones left, so a card
number is never also counted as a phone number.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date
from typing import Any

import phonenumbers
from django.conf import settings

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "iban": "[IBAN]",
    "card": "[CARD]",
    "national_id": "[NATIONAL_ID]",
    "phone": "[PHONE]",
}
PII_KINDS = tuple(PLACEHOLDERS)

# Regions whose national phone formats are recognised without a leading "+"; international
# numbers ("+358 40 ...") are recognised under any region.
DEFAULT_PHONE_REGIONS = ("US", "GB", "FI", "DE", "SE")

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_HETU = re.compile(r"\b(\d{2})(\d{2})(\d{2})([-+A-FU-Y])(\d{3})([0-9A-Y])\b")
_HETU_CHECK = "0123456789ABCDEFHJKLMNPRSTUVWXY"
_HETU_CENTURY = {"+": 1800, "-": 1900, "U": 1900, "V": 1900, "W": 1900, "X": 1900, "Y": 1900,
                 "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000}
# Country code -> IBAN length (the SEPA area and a few common others); others: 15..34.
_IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26,
    "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MT": 31, "NL": 18, "NO": 15, "PL": 28,
    "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24,
}
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
# Every detector after the e-mail one (IBAN, card, SSN, henkilötunnus, phonenumbers' own
# patterns) matches `\d` digits only, so a text without one cannot hold what they look for; the
# C-level search is what makes skipping them cheap (a per-character Python loop cost more than
# the regexes it saved on a 100,000-record upload).
_DIGIT = re.compile(r"\d")
_NON_DIGITS = re.compile(r"\D+")
_MAYBE_PII = re.compile(r"[@\d]")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    iban = candidate.replace(" ", "")
    country = iban[:2]
    expected = _IBAN_LENGTHS.get(country)
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def hetu_valid(match: re.Match) -> bool:
    dd, mm, yy, sep, individual, check = match.groups()
    try:
        date(_HETU_CENTURY[sep] + int(yy), int(mm), int(dd))
    except (KeyError, ValueError):
        return False
    return _HETU_CHECK[int(dd + mm + yy + individual) % 31] == check


def _sub_checked(pattern: re.Pattern, text: str, placeholder: str, check) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        if not check(match):
            return match.group(0)
        count += 1
        return placeholder

    return pattern.sub(replace, text), count


def _card_check(match: re.Match) -> bool:
    digits = _NON_DIGITS.sub("", match.group(0))
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _redact_phones(text: str) -> tuple[str, int]:
    # Cheap pre-check: a phone number has at least 7 digits; most texts have fewer.
    if len(_DIGIT.findall(text)) < 7:
        return text, 0
    regions = getattr(settings, "PII_PHONE_REGIONS", DEFAULT_PHONE_REGIONS)
    count = 0
    for region in regions:
        spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.VALID)]
        for start, end in reversed(spans):
            text = text[:start] + PLACEHOLDERS["phone"] + text[end:]
            count += 1
        if len(_DIGIT.findall(text)) < 7:
            break
    return text, count


def pii_redact(text: str) -> tuple[str, dict[str, int]]:
    """Redact PII in one text. Returns the redacted text and {kind: count} of what was found."""
    if not text:
        return text, {}
    counts: dict[str, int] = {}
    if "@" in text:
        text, n = _sub_checked(_EMAIL, text, PLACEHOLDERS["email"], lambda m: True)
        counts["email"] = n
    if _DIGIT.search(text):
        text, n = _sub_checked(_IBAN, text, PLACEHOLDERS["iban"],
                               lambda m: iban_valid(m.group(0)))
        counts["iban"] = n
        text, n = _sub_checked(_CARD, text, PLACEHOLDERS["card"], _card_check)
        counts["card"] = n
        text, n_ssn = _sub_checked(_SSN, text, PLACEHOLDERS["national_id"], lambda m: True)
        text, n_hetu = _sub_checked(_HETU, text, PLACEHOLDERS["national_id"], hetu_valid)
        counts["national_id"] = n_ssn + n_hetu
        text, n = _redact_phones(text)
        counts["phone"] = n
    return text, {kind: n for kind, n in counts.items() if n}


def pii_may_be_in(text: str) -> bool:
    """Whether `pii_redact` could find anything in `text` (or in any string of a value whose JSON
    `text` is): every detector needs an '@' or a digit. One C-level search, so a caller can skip
    the per-string pass for the many texts that have neither."""
    return _MAYBE_PII.search(text) is not None


def pii_redact_value(value: Any) -> tuple[Any, dict[str, int]]:
    """Redact every string inside a JSON-like value (dicts, lists, strings)."""
    totals: Counter = Counter()

    def walk(node):
        if isinstance(node, str):
            redacted, counts = pii_redact(node)
            if counts:  # most texts have none; Counter.update of {} is not free
                totals.update(counts)
            return redacted
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(value), dict(totals)


def pii_counts_add(into: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    """Sum two {kind: count} documents (returns a new dict)."""
    merged = Counter(into or {})
    merged.update(counts or {})
    return {kind: n for kind, n in merged.items() if n}


def pii_is_hold(redacted: str, counts: dict[str, int]) -> bool:
    """A correction that was mostly PII: fewer than three words remain once the placeholders are
    taken out. It is kept (history, audit) but held back from training, because what is left
    teaches nothing and its context may still identify the person."""
    if not counts:
        return False
    remaining = _PLACEHOLDER_RE.sub(" ", redacted)
    return len(re.findall(r"[^\W\d_]{2,}", remaining)) < 3
