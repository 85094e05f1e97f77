"""Masking secrets: the allow-listed secret values and key-shaped strings, however spelled.

Written once for every process that stores or sends text: the worker masks agent output
before it is spooled, and the supervisor masks every reply to a control client.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote_from_bytes, quote_plus

import msgspec
import msgspec.inspect

# Lines longer than this are masked as bytes only, not decoded as JSON.
DECODE_LIMIT = 1 << 20
REDACTED = b"[REDACTED]"
# Secrets at least this long are also masked in base64, hex and percent-encoding (shorter
# ones would match by chance).
BASE64_MIN = 16

# Well-known credential shapes, masked even when their variable was not allow-listed.
KEY_SHAPES = (
    r"(?<![A-Za-z0-9])(?:"
    r"sk-ant-[A-Za-z0-9_\-]{16,}"
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16}"
    r")"
)
KEY_PATTERNS = re.compile(KEY_SHAPES.encode())
KEY_PATTERNS_TEXT = re.compile(KEY_SHAPES)
# Every key shape starts with one of these. Searching for them runs at memchr speed; the
# regex costs ~40 ns a byte (0.4 ms on a 64-worker status), so it runs only where one is.
KEY_STARTS_TEXT = ("sk-", "gh", "github_pat_", "xox", "AKIA")
KEY_STARTS = tuple(start.encode() for start in KEY_STARTS_TEXT)
# JSON's two-character escapes, by the character they stand for.
SHORT_ESCAPES = {"/": "/", '"': '"', "\\": "\\"} | {
    "\b": "b",
    "\f": "f",
    "\n": "n",
    "\r": "r",
    "\t": "t",
}


class Redactor:
    """Masks secret values (from the allow-listed secret variables) and key-shaped strings.

    A secret is masked however JSON may spell it (any character as a `\\u` escape, `\\/`):
    in the raw line, and in every string of a JSON line once decoded (which also catches
    key shapes written with escapes), so that no reader that decodes JSON finds it.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        values = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        encoded = [f for s in values if len(s) >= BASE64_MIN for f in _encoded_forms(s.encode())]
        self.secrets = sorted({s.encode() for s in values} | set(encoded), key=len, reverse=True)
        self.texts = [s.decode() for s in self.secrets]
        self.spellings = (
            re.compile(b"|".join(_json_spelling(s) for s in values)) if values else None
        )
        # A cut waits for this many bytes past the limit: the longest escaped secret.
        self.window = max(1024, 12 * max((len(s) for s in self.secrets), default=0))

    def holds_nothing(self, data: bytes) -> bool:
        """Whether `mask` would leave every part of `data` as it is: no secret, no key's start
        and no escape in it. One check of many lines joined spares masking each of them."""
        if b"\\" in data or any(start in data for start in KEY_STARTS):
            return False
        return not any(secret in data for secret in self.secrets)

    def mask(self, line: bytes) -> tuple[bytes, bool]:
        masked = line
        for secret in self.secrets:
            if secret in masked:
                masked = masked.replace(secret, REDACTED)
        if b"\\" in masked and self.spellings is not None:
            masked = self.spellings.sub(REDACTED, masked)
        if any(start in masked for start in KEY_STARTS):
            masked = KEY_PATTERNS.sub(REDACTED, masked)
        if b"\\" in masked and len(masked) <= DECODE_LIMIT:
            masked = self._mask_decoded(masked)
        return masked, masked is not line and masked != line

    def mask_text(self, text: str) -> str:
        """`text` (already decoded) with every secret and key shape masked."""
        for secret in self.texts:
            if secret in text:
                text = text.replace(secret, REDACTED.decode())
        if any(start in text for start in KEY_STARTS_TEXT):
            text = KEY_PATTERNS_TEXT.sub(REDACTED.decode(), text)
        return text

    def cut_before(self, data: bytes, limit: int) -> int:
        """Where to cut `data` near `limit` so that no secret or key is split: its start."""
        starts = [limit]
        for secret in self.secrets:  # as is, and its base64 forms
            start = data.find(secret, max(1, limit - len(secret) + 1))
            if 0 < start < limit:
                starts.append(start)
        for pattern in (self.spellings, KEY_PATTERNS):
            if pattern is None:
                continue
            for match in pattern.finditer(data, max(0, limit - self.window)):
                if 0 < match.start() < limit < match.end():
                    starts.append(match.start())
        return min(starts)

    def _mask_decoded(self, line: bytes) -> bytes:
        """A JSON line whose decoded strings hold a secret, re-encoded with them masked."""
        try:
            value = _decode_any(line)
        except (msgspec.DecodeError, RecursionError):
            return line
        try:
            masked = _mask_strings(value, self.mask_text)
        except RecursionError:
            return line
        return msgspec.json.encode(masked) if masked != value else line


def _mask_strings(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_mask_strings(v, mask) for v in value]
    if isinstance(value, dict):
        return {mask(k): _mask_strings(v, mask) for k, v in value.items()}
    return value


def _encoded_forms(secret: bytes) -> list[bytes]:
    """`secret` as the encodings a tool may write it in and anyone can undo: base64, hex and
    percent-encoding (URLs, form bodies), each in the spellings that are common."""
    every_byte = "".join(f"%{byte:02X}" for byte in secret)
    forms = [
        *_base64_forms(secret),
        secret.hex().encode(),
        secret.hex().upper().encode(),
        quote_from_bytes(secret, safe="").encode(),
        quote_from_bytes(secret).encode(),  # "/" kept, as in a URL's path
        quote_plus(secret, safe="").encode(),
        every_byte.encode(),
        every_byte.lower().encode(),
    ]
    return [form for form in dict.fromkeys(forms) if form != secret]


def _base64_forms(secret: bytes) -> list[bytes]:
    """The base64 characters (standard and URL-safe) that `secret` alone determines, at each
    of the three alignments it can have inside a longer encoded text."""
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret)
        core = encoded[-(-8 * shift // 6) : 8 * (shift + len(secret)) // 6]
        forms += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return forms


def _json_spelling(secret: str) -> bytes:
    """A pattern for every way JSON may write `secret`: each character as itself or escaped."""
    parts = []
    for char in secret:
        ways = [re.escape(char.encode())]
        code = ord(char)
        units = [code] if code < 0x10000 else _surrogates(code)
        ways.append(b"".join(b"\\\\u" + _hex_pattern(unit) for unit in units))
        if char in SHORT_ESCAPES:
            ways.append(re.escape(b"\\" + SHORT_ESCAPES[char].encode()))
        parts.append(b"(?:" + b"|".join(ways) + b")")
    return b"".join(parts)


def _surrogates(code: int) -> list[int]:
    code -= 0x10000
    return [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]


def _hex_pattern(unit: int) -> bytes:
    digits = f"{unit:04x}"
    return b"".join(f"[{d}{d.upper()}]".encode() if d.isalpha() else d.encode() for d in digits)


_decode_any = msgspec.json.Decoder().decode


def mask_message(message: Any, redactor: Redactor) -> Any:
    """A wire struct with every string (and bytes) field masked; itself when nothing changed."""
    if not _may_hold_bytes(type(message)):
        # Every string of such a struct is in its JSON, as itself or JSON-escaped, and `mask`
        # finds a secret or key shape in either spelling: a JSON with none needs no walk
        # (the walk cost a 64-worker `status` a quarter of the supervisor's CPU).
        encoded = msgspec.json.encode(message)
        if len(encoded) <= DECODE_LIMIT and not redactor.mask(encoded)[1]:
            return message
    plain = msgspec.to_builtins(message, builtin_types=(bytes,))
    masked = _mask_values(plain, redactor)
    if masked == plain:
        return message
    return msgspec.convert(masked, type(message), builtin_types=(bytes,))


@functools.cache
def _may_hold_bytes(kind: type) -> bool:
    """Whether a value of `kind` can hold bytes (base64 in its JSON, so not found in it)."""
    return _info_holds_bytes(msgspec.inspect.type_info(kind), set())


def _info_holds_bytes(info: msgspec.inspect.Type, seen: set[int]) -> bool:
    plain = (
        msgspec.inspect.StrType,
        msgspec.inspect.IntType,
        msgspec.inspect.FloatType,
        msgspec.inspect.BoolType,
        msgspec.inspect.NoneType,
        msgspec.inspect.LiteralType,
        msgspec.inspect.EnumType,
    )
    if isinstance(info, plain):
        return False
    if isinstance(info, msgspec.inspect.StructType):
        if id(info.cls) in seen:
            return False
        seen.add(id(info.cls))
        return any(_info_holds_bytes(f.type, seen) for f in info.fields)
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_info_holds_bytes(t, seen) for t in info.types)
    if isinstance(info, msgspec.inspect.DictType):
        return _info_holds_bytes(info.key_type, seen) or _info_holds_bytes(info.value_type, seen)
    if isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.VarTupleType)):
        return _info_holds_bytes(info.item_type, seen)
    if isinstance(info, msgspec.inspect.TupleType):
        return any(_info_holds_bytes(t, seen) for t in info.item_types)
    return True  # bytes, or a kind not known here: take the walk


def _mask_values(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, bytes):
        return redactor.mask(value)[0]
    if isinstance(value, str):
        return redactor.mask_text(value)
    if isinstance(value, list):
        return [_mask_values(v, redactor) for v in value]
    if isinstance(value, dict):
        return {k: _mask_values(v, redactor) for k, v in value.items()}
    return value
