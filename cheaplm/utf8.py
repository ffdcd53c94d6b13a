"""UTF-8 validity of a byte stream that is written one byte at a time (generation's output is
always valid UTF-8: a byte that cannot continue the character under way gets probability 0)."""

import numpy as np

_START_MASK = np.zeros(256, dtype=bool)
_START_MASK[0x00:0x80] = True
_START_MASK[0xC2:0xF5] = True
_SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}


def utf8_allowed(pending: bytes) -> np.ndarray:
    """Mask of bytes that keep `pending` (an incomplete character, or b'') a valid UTF-8 prefix."""
    if not pending:
        return _START_MASK
    ok = np.zeros(256, dtype=bool)
    lead = pending[0]
    need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    if len(pending) == 1:
        lo, hi = _SECOND_BYTE.get(lead, (0x80, 0xBF))
    else:
        lo, hi = 0x80, 0xBF
    assert len(pending) < need
    ok[lo:hi + 1] = True
    return ok


def char_complete(pending: bytes) -> bool:
    if not pending:
        return True
    lead = pending[0]
    need = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return len(pending) >= need


def utf8_after(pending: bytes, byte: int) -> bytes:
    """The incomplete character at the end of a stream after `byte` follows `pending` (b'' when whole)."""
    pending = (pending + bytes([byte])) if (pending or byte >= 0x80) else b""
    return b"" if char_complete(pending) else pending
