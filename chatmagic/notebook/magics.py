"""The %%chatmany cell magic: traits and flags made from the option table, a short body.

In a kernel the cell is rewritten (by an input transformer) into a top-level ``await`` of
``cell_async``, so requests run on the kernel's own loop while the cell still blocks like any
other. Where that is not possible (``%autoawait off``, another loop runner) the ordinary cell
magic runs the same engine on a worker thread.
"""

from __future__ import annotations

import asyncio
import difflib
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Float, Integer, TraitType, Unicode

from chatmagic.api import run_memory, served_models
from chatmagic.core.bridge import interruptible, run_sync
from chatmagic.core.memory import Memory
from chatmagic.core.prices import Prices
from chatmagic.core.schema import lookup
from chatmagic.errors import ConfigError, RunAborted, interrupted
from chatmagic.notebook.cell import Plan
from chatmagic.notebook.cell import plan as cell_plan
from chatmagic.notebook.dryrun import dry_run_report
from chatmagic.notebook.stored import value as cell_value
from chatmagic.settings import OPTIONS, Option, resolve_cell

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure

    from chatmagic.core.timeline import Timeline
    from chatmagic.errors import RunInterrupted
    from chatmagic.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

MAGIC = "%%chatmany"
#: Answer length while the local model is the default: a tiny model on 2 cores is slow past this.
LOCAL_MAX_TOKENS = 48


def unknown_flag(word: str, known: list[str]) -> str:
    """One line for a word %%chatmany does not know, naming the closest flag if one is close."""
    if not word.startswith("-"):
        return f"%%chatmany: unexpected argument {word!r} (prompts go on the lines below, not after %%chatmany)"
    flag = word.split("=", 1)[0]
    names = {k.lstrip("-"): k for k in known if k.startswith("--") == flag.startswith("--")}
    close = difflib.get_close_matches(flag.lstrip("-"), list(names), n=1, cutoff=0.7)  # dashes match anything
    hint = f"; did you mean {names[close[0]]}?" if close else "; %%chatmany? lists the flags"
    return f"%%chatmany: unrecognized arguments: {flag}{hint}"


def _trait(option: Option) -> TraitType[Any, Any]:
    kind = {str: Unicode, int: Integer, float: Float, bool: Bool, dict: Dict, object: AnyTrait}[option.type]
    trait: TraitType[Any, Any] = kind(default_value=None, allow_none=True,
                                      help=f"{option.plain_help} (default: {option.shown_default()})")
    return trait.tag(config=True)


def _flags(func: F) -> F:
    """The magic's flags, one per option of the table that has flag spellings."""
    for option in reversed([o for o in OPTIONS if o.flags]):  # argument() stacks like decorators
        help = f"{option.plain_help} (default: {option.shown_default()})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": help}
        if option.type is bool:
            kwargs["action"] = "store_false" if option.flags[-1].startswith("--no-") else "store_true"
        else:  # a dict flag takes KEY=JSON and repeats; resolve_cell parses them
            kwargs.update(metavar=option.metavar, type=str if option.type in (dict, object) else option.type,
                          action="append" if option.type is dict else "store")
        func = argument(*option.flags, **kwargs)(func)  # type: ignore[no-untyped-call]
    return cast(F, magic_arguments(name="%chatmany")(func))  # type: ignore[no-untyped-call]


@magics_class
class ChatMany(Magics):
    """Defaults for %%chatmany; set them with ``%config ChatMany.<name> = value``."""

    # the class body's namespace: one trait per option of the table with ``config``
    locals().update({o.name: _trait(o) for o in OPTIONS if o.config})

    _local_cap = False  # max_tokens was set by %chatmany_local, and goes with it
    _local_model_stash: str | None = None  # the %config model set aside by %chatmany_local

    def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        # timelines of each run by its -o name, for %chatmany_plot (small: not the answers)
        self._timelines: dict[str, list[Timeline]] = {}
        self._last_out: str | None = None
        self.memory = Memory()  # what this shell's runs learn about servers: a later cell starts at the pace learnt

    @_flags
    @cell_magic
    def chatmany(self, line: str, cell: str) -> None:
        """Send each non-blank line of the cell as a prompt, concurrently, and store the answers.

        The variable holds a list of answers in prompt order (None where a prompt failed), or with
        --df a DataFrame with one row per prompt. Defaults: %config ChatMany.<name> = value.
        """
        plan = self.prepare(line, cell)
        if plan is None:
            return
        try:
            failures = run_sync(lambda: run_all(plan))
        except KeyboardInterrupt:
            raise self.interrupted(plan) from None
        self.finish(plan, failures)

    def prepare(self, line: str, cell: str) -> Plan | None:
        """Parse and validate everything; nothing is sent if this raises. None after a dry run."""
        try:  # POSIX quoting, so --system 'be brief' and -p 'stop=["."]' mean what they say
            words = shlex.split(line)
        except ValueError as e:
            raise ConfigError(f"%%chatmany {line}: {e}") from None
        parser = cast(Any, ChatMany.chatmany).parser  # magic_arguments hangs it on the function
        args, extra = parser.parse_known_args(words)
        if extra:
            raise ConfigError(unknown_flag(extra[0], [f for o in OPTIONS for f in o.flags]))
        flags, defaults = vars(args), self._defaults()
        for layer in (flags, defaults):  # --schema NAME: the notebook variable NAME
            layer["schema"] = lookup(layer["schema"], self._namespace)
        settings, options = resolve_cell(flags, defaults, served=served_models())
        plan_ = cell_plan(settings, cell=cell, out=options.out, as_df=options.df, over=options.over,
                          sep=options.sep, user_ns=self._namespace,
                          images=options.images, messages=options.messages, memory=run_memory(self.memory))
        if options.dry_run:
            head = settings.dialect.head(settings)  # what is sent: the dialect's max_tokens, schema fields
            structured: dict[str, Any] | None = ({k: head[k] for k in ("response_format", "tools", "tool_choice")
                                                  if k in head}
                          if settings.schema is not None else None)
            print(dry_run_report(plan_.prompts, list(plan_.runs), system=settings.system_prompt,
                                 max_tokens=head.get("max_tokens", settings.max_tokens), prices=Prices.of(settings),
                                 labels=plan_.labels, schema=settings.schema, media=plan_.media(),
                                 structured=structured, max_cost=settings.max_cost))
            if settings.batch:
                from chatmagic.batch.run import dry_run_note
                print(dry_run_note(len(plan_.prompts), len(plan_.runs), settings))
            plan_.close()
            return None
        return plan_

    def finish(self, plan: Plan, failures: dict[str, RunAborted]) -> None:
        """Store the results (also of failed or interrupted runs), print one line per model,
        then raise what stopped a run."""
        self._namespace[plan.out] = cell_value(plan)
        self._timelines[plan.out] = [run.timeline for run in plan.runs.values()]
        self._last_out = plan.out
        for model, run in plan.runs.items():
            prefix = f"{model}: " if len(plan.runs) > 1 else ""
            print(f"{prefix}{run.results.summary()} -> {plan.out}")
        if failures:
            model, error = next(iter(failures.items()))
            if len(plan.runs) > 1:
                error.message = f"model {model} stopped ({error}); the other models finished"
                error.status = error.code = None
            raise error

    @line_magic
    def chatmany_cache(self, line: str) -> None:
        """%chatmany_cache: entries, size and location of the answer cache; %chatmany_cache clear."""
        from chatmagic.core.cache import Cache, describe
        action = line.strip()
        if action not in ("", "clear"):
            raise ConfigError(f"%chatmany_cache {action}: expected no argument or 'clear'")
        cache, removed = Cache.open_or_remove() if action == "clear" else (Cache.open(), None)
        if removed:
            print(removed)
        try:
            if action == "clear" and cache is not None:
                cache.clear()
            print(describe(cache))
        finally:
            if cache is not None:
                cache.close()

    @line_magic
    def chatmany_batches(self, line: str) -> None:
        """%chatmany_batches: this cache's batches (id, status, counts, age), their statuses
        fetched from the default server; %chatmany_batches cancel ID cancels one."""
        from chatmagic.batch.admin import cancel_batch, list_batches
        words = line.split()
        if words[:1] == ["cancel"] and len(words) == 2:
            print(cancel_batch(self._settings(), words[1]))
        elif not words:
            try:
                settings = self._settings()
            except ConfigError:  # no key for the default server: list what is stored
                settings = None
            print(list_batches(settings))
        else:
            raise ConfigError(f"%chatmany_batches {line.strip()}: expected no argument or 'cancel ID'")

    @property
    def _namespace(self) -> dict[str, Any]:
        """The notebook's variables (a registered magic always has its shell)."""
        assert self.shell is not None
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _settings(self) -> Settings:
        """The session's settings from the %config defaults alone."""
        return resolve_cell({}, self._defaults(), served=served_models())[0]

    def _defaults(self) -> dict[str, Any]:
        """The %config ChatMany values (None where not set)."""
        return {o.name: getattr(self, o.name) for o in OPTIONS if o.config}

    @line_magic
    def chatmany_plot(self, line: str) -> Figure:
        """%chatmany_plot [NAME ...]: a picture of the last %%chatmany run, or of each NAME (a
        run's -o, a Results or a Timeline variable), one row per run and model on one time axis:
        requests in flight, latency, answers over time. Returns the matplotlib Figure.
        Needs chatmagic[plot]."""
        from chatmagic.core.plotting import figure
        names = line.split() or ([self._last_out] if self._last_out else [])
        if not names:
            raise ConfigError("%chatmany_plot: no %%chatmany run yet; run one, or name a Results variable")
        rows = [(name, tl) for name in names for tl in self._timelines_of(name)]
        labels = [f"{name} ({tl.label})" if tl.label and tl.label != name else name for name, tl in rows]
        return figure([tl for _, tl in rows], labels=labels if len(names) > 1 else None)

    def _timelines_of(self, name: str) -> list[Timeline]:
        from chatmagic.core.timeline import Timeline
        from chatmagic.results import Results
        value = self._namespace.get(name)
        if isinstance(value, Timeline):
            return [value]
        if isinstance(value, Results) and value.timeline is not None:
            return [value.timeline]
        if name not in self._timelines:
            raise ConfigError(f"%chatmany_plot {name}: no %%chatmany run stored there, and no Results or Timeline")
        return self._timelines[name]

    @line_magic
    def chatmany_local(self, line: str) -> None:
        """%chatmany_local: start the small local model (no API key, no network) and make it this
        session's default server and model; %chatmany_local stop. Needs chatmagic[local]."""
        from chatmagic.practice import local as local
        action = line.strip()
        if action not in ("", "start", "stop"):
            raise ConfigError(f"%chatmany_local {action}: expected no argument, 'start' or 'stop'")
        if action == "stop":
            local.stop()
            self.base_url = None
            if getattr(self, "model", None) is None:  # the model set aside by %chatmany_local comes back
                self.model = self._local_model_stash
            self._local_model_stash = None
            if self._local_cap:
                self.max_tokens, self._local_cap = None, False
            print("local model stopped; defaults are back to the environment's")
            return
        server = local.get_or_start()
        # Only the base URL: the local model is the default model at that URL alone (settings.resolve),
        # so a cell with another --base-url never sends it. A %config model would win over it, so it
        # is set aside while the local server is the default.
        model = getattr(self, "model", None)  # a trait from the table, which mypy cannot see
        if model is not None and self._local_model_stash is None:
            self._local_model_stash, self.model = model, None
        self.base_url = server.base_url
        if self.max_tokens is None:
            self.max_tokens, self._local_cap = LOCAL_MAX_TOKENS, True
        print(f"local model {server.model} at {server.base_url} is this session's default "
              f"(max tokens {self.max_tokens}); %chatmany_local stop to stop it")

    async def chatmany_async(self, line: str, cell: str) -> None:
        """The await path: the same runs on the kernel's loop, with an immediate interrupt."""
        plan = self.prepare(line, cell)
        if plan is None:
            return
        task = asyncio.ensure_future(run_all(plan))
        with interruptible(task) as by_user:
            try:
                failures = await task
            except asyncio.CancelledError:
                if by_user:  # the cell's own coroutine raises, so queued cells abort
                    raise self.interrupted(plan) from None
                self.finish(plan, {})
                raise
        self.finish(plan, failures)

    def interrupted(self, plan: Plan) -> RunInterrupted:
        """Keep what finished; the one-line exception that ends an interrupted cell."""
        self.finish(plan, {})
        first = next(iter(plan.runs.values()))
        return interrupted({m: r.results for m, r in plan.runs.items()}, where=f"`{plan.out}`",
                           again="running the cell again", cache=first.settings.cache)


def _plain_help(doc: str) -> str:
    """magic_arguments writes the help as reStructuredText (a "::" literal block, indented);
    %%chatmany? shows it as plain text, so: the usage first, aligned, with no stray "::"."""
    usage, sep, rest = doc.partition("\n\n  %")[2].partition("\n\n")
    return "%" + usage.replace("\n" + " " * 17, "\n" + " " * 11) + sep + rest


ChatMany.chatmany.__doc__ = _plain_help(ChatMany.chatmany.__doc__ or "")


async def run_all(plan: Plan) -> dict[str, RunAborted]:
    """Run every model's prompts at once; a model whose run stops does not stop the others.
    Returns model -> RunAborted for the runs that stopped."""
    models = list(plan.runs)
    try:
        from chatmagic.batch.run import send
        outcomes = await asyncio.gather(*(send(plan.runs[m]) for m in models), return_exceptions=True)
    finally:
        plan.close()  # the shared cache writes what is buffered, also after an interrupt
    failures: dict[str, RunAborted] = {}
    for model, outcome in zip(models, outcomes):
        if isinstance(outcome, RunAborted):
            failures[model] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
    return failures


def transform(lines: list[str]) -> list[str]:
    """Rewrite a %%chatmany cell into a top-level await when the shell can run one on its loop."""
    if not lines or not lines[0].startswith(MAGIC) or lines[0][len(MAGIC):][:1] not in ("", " ", "\t", "\n"):
        return lines
    from IPython import get_ipython
    from IPython.core.async_helpers import _asyncio_runner
    ip = get_ipython()
    if ip is None or not ip.autoawait or ip.loop_runner is not _asyncio_runner:
        return lines
    line, cell = lines[0][len(MAGIC):].strip(), "".join(lines[1:])
    return [f"await __import__('chatmagic.notebook.magics').notebook.magics.cell_async({line!r}, {cell!r})\n"]


async def cell_async(line: str, cell: str) -> None:
    from IPython import get_ipython
    await get_ipython().magics_manager.registry["ChatMany"].chatmany_async(line, cell)


def load(ip: InteractiveShell) -> None:
    ip.register_magics(ChatMany)
    transforms = ip.input_transformer_manager.line_transforms
    if transform not in transforms:
        transforms.insert(0, transform)  # before IPython's own cell-magic transform


def unload(ip: InteractiveShell) -> None:
    transforms = ip.input_transformer_manager.line_transforms
    if transform in transforms:
        transforms.remove(transform)
