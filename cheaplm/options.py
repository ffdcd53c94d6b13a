"""Option dictionaries (JSON configs, checkpoints, --reader) checked against a config dataclass."""

from __future__ import annotations

import dataclasses


def check_keys(cls, d: dict, what: str) -> dict:
    """d, if every key names a field of dataclass cls; else a ValueError naming the unknown keys."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(sorted(unknown))}")
    return d
