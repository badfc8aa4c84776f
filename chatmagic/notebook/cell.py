"""From a %%chatmany cell to runs (the value stored from their results: stored.py).

No IPython here: the magic hands in the parsed flags and the user's namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatmagic.core.cache import Cache
from chatmagic.errors import ConfigError
from chatmagic.notebook.prompts import split_lines, split_sep
from chatmagic.notebook.rowdata import cell_rows
from chatmagic.notebook.templates import Template, render_over

if TYPE_CHECKING:
    from chatmagic.core.engine import Run
    from chatmagic.core.memory import Memory
    from chatmagic.core.schema import Schema
    from chatmagic.settings import Settings


@dataclass
class Plan:
    """What one cell will do: the runs (one per model) and how to store their results."""

    runs: dict[str, Run]  # model -> Run
    out: str
    as_df: bool = False
    json: bool = False
    schema: Schema | None = None  # the runs' schema, if any
    data: object = None  # the --over object, when it was a DataFrame or Series
    labels: list[Any] = field(default_factory=list)
    cache: Cache | None = None  # the answer cache the runs share, if several models share one

    def close(self) -> None:
        """Close the shared answer cache (after the runs, or when nothing will run)."""
        if self.cache is not None:
            self.cache.close()

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in next(iter(self.runs.values())).results]

    def media(self) -> tuple[str, int] | None:
        """The dry run's line on the images the rows would send, and their tokens (headers only)."""
        run = next(iter(self.runs.values()))
        if run.rows is None:
            return None
        from chatmagic.notebook.dryrun import media_report
        return media_report(run.rows, run.dialect.name, run.settings.model, run.settings.image_detail)


def prompts_of(cell: str, *, over: str | None, sep: str | None, user_ns: dict[str, Any], images: str | None = None,
               messages: str | None = None, system: str | None = None) -> tuple[list[Any], list[Any], Any]:
    """The prompts (strings, or Rows with images, messages or a system prompt of their own), their
    labels and the --over data."""
    if over is None:
        for flag, given in (("--images", images), ("--messages", messages)):
            if given is not None:
                raise ConfigError(f"{flag} {given} names a column: it needs --over DATA")
        prompts = split_sep(cell, sep) if sep is not None else split_lines(cell)
        return prompts, list(range(len(prompts))), None
    if over not in user_ns:
        raise ConfigError(f"--over {over}: no variable of that name in the notebook")
    data = user_ns[over]
    if images is not None or messages is not None or (system is not None and "{" in system):
        rows, labels = cell_rows(cell, data, name=over, images=images, messages=messages, system=system)
        return rows, labels, data
    if not cell.strip():
        raise ConfigError(f"--over {over}: the cell is empty; write the prompt template below %%chatmany")
    prompts, labels = render_over(cell, data, name=over)
    return prompts, labels, data


def plan(settings: Settings, *, cell: str, out: str, as_df: bool, over: str | None = None, sep: str | None = None,
         user_ns: dict[str, Any] | None = None, images: str | None = None,
         messages: str | None = None, memory: Memory | None = None) -> Plan:
    from chatmagic.core.engine import Run  # here, so that %load_ext does not import aiohttp
    from chatmagic.core.spend import Purse
    prompts, labels, data = prompts_of(cell, over=over, sep=sep, user_ns=user_ns or {}, images=images,
                                       messages=messages, system=settings.system)
    if over is not None and settings.system and "{" in settings.system and not Template(settings.system).fields:
        settings = settings.replace(system=Template(settings.system).render({}))  # {{ }}: literal braces
    models = settings.models  # -m a,b,c as written (settings.py split and checked them)
    # -m a,b: one connection to the answer cache for every model's run (one model opens its own)
    shared = Cache.open() if settings.cache and len(models) > 1 else None
    # -m a,b --max-cost: one cap for the cell, what every model's run spends counted together
    purse = Purse(settings.max_cost) if settings.max_cost is not None and len(models) > 1 else None
    try:
        runs = {m: Run(prompts, settings.for_model(m), desc=m if len(models) > 1 else "chatmany",
                       cache=shared, memory=memory, purse=purse) for m in models}
    except BaseException:
        if shared is not None:
            shared.close()
        raise
    return Plan(runs, out, as_df, settings.json, settings.schema, data, labels, shared)
