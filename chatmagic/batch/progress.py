"""The progress bar of a batch run: the batches' own status and request counts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatmagic.core.progress import Bar

Batches = Iterable[Mapping[str, Any]]  # each batch in the engine's names (batch/dialect.py)

class BatchProgress:
    """The bar of a batch run: the batches' own request_counts and status, ending as the
    interactive bar does (a static picture in a notebook, coloured by the outcome)."""

    def __init__(self, enabled: bool | None, total: int, desc: str) -> None:
        self.bar: Bar | None = None
        self.failed = 0
        if enabled is True:
            from chatmagic.core.progress import Bar
            self.bar = Bar(total, 0, desc, "request")

    def show(self, batches: Batches) -> None:
        if self.bar is None:
            return
        bar, seen = self.bar.tqdm, list(batches)
        counts = [b.get("request_counts") or {} for b in seen]
        bar.total = max(bar.total, sum(c.get("total", 0) for c in counts))
        bar.n = sum(c.get("completed", 0) + c.get("failed", 0) for c in counts)
        self.failed = sum(c.get("failed", 0) for c in counts)
        if self.failed and self.bar.state == "running":
            self.bar.paint("failed")
        bar.set_postfix_str(self._postfix(seen), refresh=False)
        bar.refresh()

    def _postfix(self, batches: Batches) -> str:
        statuses = sorted({b.get("status", "?") for b in batches})
        return ", ".join(statuses) + (f", {self.failed} failed" if self.failed else "")

    def close(self, batches: Batches, interrupted: bool) -> None:
        if self.bar is not None:
            state = "stopped" if interrupted else "failed" if self.failed else "ok"
            postfix = self._postfix(batches) + (", interrupted: the batch keeps running" if interrupted else "")
            self.bar.finish(state, postfix)
