"""The %%chatmany cell magic: defaults as traits, flags as magic_arguments, a short body.

In a kernel the cell is rewritten (by an input transformer) into a top-level ``await`` of
``cell_async``, so requests run on the kernel's own loop while the cell still blocks like any
other. Where that is not possible (``%autoawait off``, another loop runner) the ordinary cell
magic runs the same engine on a worker thread.
"""

from __future__ import annotations

import asyncio
import shlex

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Dict, Float, Integer, Unicode

from .bridge import interruptible, run_sync
from .config import DEFAULTS, check_identifier, parse_param, resolve
from .engine import Run
from .errors import ConfigError, RunAborted
from .prompts import split_lines

MAGIC = "%%chatmany"


def _opt(trait, name: str, help: str):
    return trait(None, allow_none=True, help=f"{help} (default: {DEFAULTS[name]!r})").tag(config=True)


@magics_class
class ChatMany(Magics):
    """Defaults for %%chatmany; set them with ``%config ChatMany.<name> = value``."""

    model = _opt(Unicode, "model", "Model name; $CHATMAGIC_MODEL if unset")
    concurrency = _opt(Integer, "concurrency", "Requests in flight at most")
    timeout = _opt(Float, "timeout", "Seconds per attempt")
    retries = _opt(Integer, "retries", "Retries after the first attempt")
    system = _opt(Unicode, "system", "System prompt")
    temperature = _opt(Float, "temperature", "Sampling temperature")
    max_tokens = _opt(Integer, "max_tokens", "Most tokens per answer")
    params = Dict(None, allow_none=True, help="Other request body fields").tag(config=True)
    base_url = _opt(Unicode, "base_url", "API base URL; $OPENAI_BASE_URL if unset")
    api_key_env = _opt(Unicode, "api_key_env", "Environment variable holding the API key")
    rpm = _opt(Float, "rpm", "Requests per minute at most")
    tpm = _opt(Float, "tpm", "Tokens per minute at most")
    cache = Bool(None, allow_none=True, help="Reuse and store answers in the cache (default: True)").tag(config=True)
    refresh = Bool(None, allow_none=True, help="Send everything again, replacing cached answers (default: False)").tag(config=True)
    out = Unicode("chatmany_results", help="Variable the results are stored in").tag(config=True)
    df = Bool(False, help="Store a pandas DataFrame instead of a list").tag(config=True)
    quiet = Bool(False, help="No progress bar").tag(config=True)

    @magic_arguments()
    @argument("-o", "--out", help="variable to store the results in (default: chatmany_results)")
    @argument("-m", "--model", help="model name (default: $CHATMAGIC_MODEL, else gpt-4o-mini)")
    @argument("-c", "--concurrency", type=int, help="requests in flight at most (default: 16)")
    @argument("-t", "--timeout", type=float, help="seconds per attempt (default: 120)")
    @argument("-r", "--retries", type=int, help="retries after the first attempt; 0 for none (default: 6)")
    @argument("--system", help="system prompt sent before each prompt")
    @argument("--temperature", type=float, help="sampling temperature")
    @argument("--max-tokens", type=int, help="most tokens per answer")
    @argument("-p", "--param", action="append", metavar="KEY=JSON",
              help="any other request body field, e.g. -p seed=42; repeatable")
    @argument("--base-url", help="API base URL (default: $OPENAI_BASE_URL, else https://api.openai.com/v1)")
    @argument("--api-key-env", help="environment variable with the API key (default: OPENAI_API_KEY)")
    @argument("--rpm", type=float, help="requests per minute at most (default: learnt from the server)")
    @argument("--tpm", type=float, help="tokens per minute at most (default: learnt from the server)")
    @argument("--refresh", action="store_true", default=None,
              help="send every prompt again and replace its cached answer")
    @argument("--no-cache", dest="cache", action="store_false", default=None,
              help="neither read nor write the answer cache")
    @argument("--df", action="store_true", default=None, help="store a pandas DataFrame instead of a list")
    @argument("-q", "--quiet", action="store_true", default=None, help="no progress bar")
    @cell_magic
    def chatmany(self, line: str, cell: str):
        """Send each non-blank line of the cell as a prompt, concurrently, and store the answers.

        The variable holds a list of answers in prompt order (None where a prompt failed), or with
        --df a DataFrame with one row per prompt. Defaults: %config ChatMany.<name> = value.
        """
        run, out, as_df = self.prepare(line, cell)
        return self.finish(run, out, as_df, lambda: run_sync(run.run))

    def prepare(self, line: str, cell: str):
        """Parse and validate everything; nothing is sent if this raises."""
        try:  # POSIX quoting, so --system 'be brief' and -p 'stop=["."]' mean what they say
            args = self.chatmany.parser.parse_args(shlex.split(line))
        except ValueError as e:
            raise ConfigError(f"%%chatmany {line}: {e}") from None
        flags = {k: v for k, v in vars(args).items() if k not in ("out", "df", "quiet", "param")}
        if args.param:
            flags["params"] = {**(self.params or {}), **dict(parse_param(p) for p in args.param)}
        traits = {name: getattr(self, name) for name in DEFAULTS if self.has_trait(name)}
        quiet = self.quiet if args.quiet is None else args.quiet
        settings = resolve(flags, traits, {"progress": not quiet})
        out = check_identifier(args.out or self.out)
        as_df = self.df if args.df is None else args.df
        return Run(split_lines(cell), settings), out, as_df

    def finish(self, run: Run, out: str, as_df: bool, execute):
        """Run, then store the results even when the run failed or was interrupted."""
        try:
            execute()
        finally:
            results = run.results
            self.shell.user_ns[out] = results.to_pandas() if as_df else results.texts()
            print(f"{results.summary()} -> {out}")

    @line_magic
    def chatmany_cache(self, line: str):
        """%chatmany_cache: entries, size and location of the answer cache; %chatmany_cache clear."""
        from .cache import Cache, describe
        action = line.strip()
        if action not in ("", "clear"):
            raise ConfigError(f"%chatmany_cache {action}: expected no argument or 'clear'")
        cache = Cache.open()
        try:
            if action == "clear" and cache is not None:
                cache.clear()
            print(describe(cache))
        finally:
            if cache is not None:
                cache.close()

    async def chatmany_async(self, line: str, cell: str):
        """The await path: the same run on the kernel's loop, with an immediate interrupt."""
        run, out, as_df = self.prepare(line, cell)
        task = asyncio.ensure_future(run.run())
        with interruptible(task) as interrupted:
            try:
                await _finish_async(self, run, out, as_df, task)
            except asyncio.CancelledError:
                if interrupted:  # the cell's own coroutine raises, so queued cells abort
                    raise KeyboardInterrupt from None
                raise


async def _finish_async(magics: ChatMany, run: Run, out: str, as_df: bool, task: asyncio.Task):
    outcome = {}
    try:
        await task
    except (RunAborted, asyncio.CancelledError) as e:
        outcome["error"] = e
    magics.finish(run, out, as_df, lambda: None)
    if "error" in outcome:
        raise outcome["error"]


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
    return [f"await __import__('chatmagic.magics').magics.cell_async({line!r}, {cell!r})\n"]


async def cell_async(line: str, cell: str):
    from IPython import get_ipython
    return await get_ipython().magics_manager.registry["ChatMany"].chatmany_async(line, cell)


def load(ip) -> None:
    ip.register_magics(ChatMany)
    transforms = ip.input_transformer_manager.line_transforms
    if transform not in transforms:
        transforms.insert(0, transform)  # before IPython's own cell-magic transform


def unload(ip) -> None:
    transforms = ip.input_transformer_manager.line_transforms
    if transform in transforms:
        transforms.remove(transform)
