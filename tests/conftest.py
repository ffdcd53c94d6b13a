import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CHEAPLM_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_DUMP = REPO / "data" / "sample-pages-articles.xml"

try:
    from numba.core.errors import NumbaPerformanceWarning

    warnings.filterwarnings("ignore", category=NumbaPerformanceWarning)
except ImportError:  # pragma: no cover
    pass


def shared(*parts) -> Path:
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p
