"""One place for progress bars (tqdm): encode, add / add_texts, train, optimize, tune and the CLI use it.

``progress=None`` (every default) shows a bar when stderr is a terminal or the code runs in a notebook
(``tqdm.auto`` picks the widget there), and only once the work has taken :data:`AUTO_DELAY` seconds, so short
calls (one query, a handful of texts) print nothing; ``progress=False`` silences it, ``progress=True`` shows
it at once wherever stderr goes. A bar opened inside another mvstore bar (an encoder's batches inside
``add_texts``) stays hidden unless forced: one bar per call, not a stack. (That is process-wide, not per
thread: Lance pulls the batches of a write from its own threads, so the inner bars run on other threads than
the outer one.) Checked with
``tests/test_sdk_text.py::test_progress_*``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .exceptions import InvalidDtypeError

#: seconds an automatic (``progress=None``) bar waits before it appears
AUTO_DELAY = 1.0

_open_bars = 0  # mvstore bars open now (shown or not), in any thread
_lock = threading.Lock()


def check_progress(progress: Any) -> bool | None:
    """``progress=`` as given: None, True or False (anything else is an InvalidDtypeError)."""
    if progress is not None and not isinstance(progress, bool):
        raise InvalidDtypeError(
            f"progress must be True (always show a bar), False (never) or None (in terminals and notebooks), "
            f"got {type(progress).__name__} {progress!r:.80}"
        )
    return progress


def interactive() -> bool:
    """Whether a person is likely watching: stderr is a terminal, or this runs in a Jupyter kernel."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or replaced stream
        pass
    shell = sys.modules.get("IPython")
    ip = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return ip is not None and hasattr(ip, "kernel")


@contextlib.contextmanager
def bar(total: int | None, desc: str, *, unit: str = "it", progress: bool | None = None) -> Iterator[Any]:
    """A tqdm bar (``with bar(n, "adding", unit="doc") as b: b.update(k)``); disabled per the module rules.
    Bars opened inside it (``progress=None``) stay hidden."""
    from tqdm.auto import tqdm

    global _open_bars
    progress = check_progress(progress)
    if progress is None:
        show, delay = _open_bars == 0 and interactive(), AUTO_DELAY
    else:
        show, delay = progress, 0.0
    b = tqdm(
        total=total, desc=desc, unit=unit, disable=not show, delay=delay, file=sys.stderr, dynamic_ncols=True
    )
    with _lock:
        _open_bars += 1
    try:
        yield b
    finally:
        with _lock:
            _open_bars -= 1
        b.close()
