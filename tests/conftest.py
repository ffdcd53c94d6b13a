import os
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

# In CI, kernels compile into a fresh cache: numba's on-disk cache keys a function on its own file, so
# after an edit it can keep stale code inlined from another module (issue 21, tests/MUTATIONS.md).
# Set before numba is imported; an explicit NUMBA_CACHE_DIR is left alone.
if os.environ.get("CI") and not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="cheaplm-numba-cache-")
    if "numba.core.config" in sys.modules:  # imported already (a plugin): point its config there too
        sys.modules["numba.core.config"].CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

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
