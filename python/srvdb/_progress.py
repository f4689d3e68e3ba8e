"""Progress bars for long jobs (embedding many documents), drawn with tqdm if it is installed.

tqdm is optional: without it there is no bar and no error. ``progress=None`` (the default)
shows a bar only for a job of at least :data:`AUTO_MIN_ITEMS` items in an interactive terminal
or a notebook, so scripts, logs and CI stay quiet; ``True`` always shows one, ``False`` never.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

#: Jobs at least this big get a bar by default (about ten seconds of embedding on two cores).
AUTO_MIN_ITEMS = 1000


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(total: int, progress: Optional[bool], desc: str) -> Optional[Any]:
    """A tqdm bar for ``total`` items, or None when none should be drawn."""
    if progress is None:
        progress = total >= AUTO_MIN_ITEMS and _interactive()
    if not progress or total <= 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="text")
