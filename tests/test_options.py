"""Options that do what they say (issue 11): the library's device defaults, ..."""

from pathlib import Path

from cheaplm.model import ModelConfig

REPO = Path(__file__).resolve().parent.parent


def test_the_library_owns_the_device_defaults():
    assert ModelConfig.for_device("cpu").table_bits == 20 == ModelConfig().table_bits
    assert ModelConfig.for_device("cuda").table_bits == 24
    assert ModelConfig.for_device("cuda", {"table_bits": 18, "words": 2}).table_bits == 18
    assert ModelConfig.for_device("cuda", {"words": 2}).words == 2
    # the callers ask the library instead of repeating the number
    for caller in ("cheaplm/cli.py", "bench/wikibench.py"):
        text = (REPO / caller).read_text()
        assert "24 if" not in text and "ModelConfig.for_device" in text, caller
