"""Option dictionaries (JSON configs, checkpoints, --reader) checked against a config dataclass."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


def check_keys(cls, d: dict, what: str) -> dict:
    """d, if every key names a field of dataclass cls; else a ValueError naming the unknown keys."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(sorted(unknown))}")
    return d


CONFIG_SECTIONS = ("model", "train")
# a run's own config.json also names its data; it is accepted (and ignored) so that the file can be
# passed back as --config to train the same model again
CONFIG_IGNORED = ("data",)


def read_config(path: Path) -> dict:
    """A --config file: a JSON object with 'model' and/or 'train' objects; anything else is a
    ValueError naming the file and the key (keys inside the sections are checked by the merge)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON config ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a config is a JSON object with 'model' and/or 'train' objects")
    unknown = set(cfg) - set(CONFIG_SECTIONS) - set(CONFIG_IGNORED)
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; a config has "
                         "'model' and/or 'train' objects")
    for key in CONFIG_SECTIONS:
        if not isinstance(cfg.get(key, {}), dict):
            raise ValueError(f"{path}: '{key}' must be a JSON object of {key} options")
    return {key: dict(cfg.get(key, {})) for key in CONFIG_SECTIONS}
