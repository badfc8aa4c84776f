"""Every option in one table, and the one resolved, validated settings object built from it.

Precedence, highest first: a flag or keyword argument > a ``%config ChatMany.<name>`` default >
an environment variable > the built-in default. Every layer uses None for "not set", and a set
value replaces the lower layers' value whole (``params`` too: ``-p`` replaces
``%config ChatMany.params``, it does not add keys to it).
"""

from __future__ import annotations

import dataclasses
import json
import keyword
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from chatmagic.errors import ConfigError
from chatmagic.transport.proxies import check_proxy, is_loopback

if TYPE_CHECKING:
    from chatmagic.core.schema import Schema
    from chatmagic.providers.dialect import Dialect
    from chatmagic.providers.profiles import Route

OPENAI_BASE_URL = "https://api.openai.com/v1"

#: Body fields the engine builds itself; ``params`` may not override them.
RESERVED_PARAMS = {"messages": "prompts come from the cell", "stream": "streaming is not supported",
                   "n": "one answer per prompt is collected",
                   "model": "set the model with -m / model= (results are labelled by it)"}

ENGINE: Literal["engine"] = "engine"  # a field of Settings and a chat_many/achat_many keyword
MAGIC: Literal["magic"] = "magic"     # used by %%chatmany only: a field of CellOptions


@dataclass(frozen=True)
class Option:
    """One row of ``OPTIONS``: everything that is written about an option, written once."""

    name: str               # snake_case: the keyword, the %config trait, the Settings field
    type: type              # str, int, float, bool, dict, or object (``check`` converts it)
    default: Any            # the built-in default; None: not set (``unset`` says what happens then)
    help: str               # one line, lower case, no default (added where shown); `code` for README
    flags: tuple[str, ...] = ()  # spellings of the %%chatmany flag, e.g. ("-c", "--concurrency")
    metavar: str | None = None   # a flag's value in help, e.g. "N"; bool flags take none
    env: str | None = None       # environment variable that supplies the default
    scope: Literal["engine", "magic"] = ENGINE
    config: bool = True          # a ``%config ChatMany.<name>`` default
    unset: str = "none"          # shown as the default when ``default`` is None
    minimum: float | None = None     # numbers: the smallest allowed value
    positive: bool = False           # numbers: must be > 0
    check: Callable[[Any], Any] | None = None  # replaces the type's check; returns the value to use
    secret: bool = False         # never shown: not in reprs, not in error messages
    item: Callable[[str], tuple[str, Any]] | None = None  # a dict flag's parser of one value

    @property
    def plain_help(self) -> str:
        """``help`` without Markdown backticks, for the terminal."""
        return self.help.replace("`", "")

    def shown_default(self, code: bool = False) -> str:
        """The default as help and README show it (``code``: names in Markdown backticks)."""
        tick = "`" if code else ""
        if self.default is None:
            return self.unset
        if self.type is bool:
            return "on" if self.default else "off"
        value = f"{self.default:g}" if isinstance(self.default, float) else str(self.default)
        if self.type is str:
            value = f"{tick}{value}{tick}"
        return f"{tick}${self.env}{tick}, else {value}" if self.env else value

    @property
    def keyword(self) -> bool:
        """A keyword of chat_many/achat_many (every engine option is one)."""
        return self.scope == ENGINE


def _nonempty_name(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be a non-empty name")
        return value
    return check


def _image_detail(value: Any) -> str | None:
    if value is None:
        return None
    if value not in ("auto", "low", "high"):
        raise ConfigError(f"image_detail must be auto, low or high, got {value!r:.30}")
    return str(value)


def _http_url(value: Any) -> str | None:
    if value is None:
        return None  # the provider's
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base URL must start with http:// or https://, got {value!r}")
    return str(value)


def _params(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError("params must be a dict of request body fields")
    for key, why in RESERVED_PARAMS.items():
        if key in params:
            raise ConfigError(f"param {key!r} cannot be set: {why}")
    for key, value in params.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            raise ConfigError(f"param {key!r} must be plain JSON (no NaN or Infinity), "
                              f"got {type(value).__name__}: {value!r:.60}") from None
    return dict(params)


def _schema(value: Any) -> Schema | None:
    if value is None:
        return None
    from chatmagic.core.schema import load  # only when a schema is used
    return load(value)


def _prices(value: Any) -> dict[str, Any] | None:
    from chatmagic.core.prices import check_prices
    return check_prices(value)


def clean_key(key: Any, where: str = "api_key") -> str | None:
    """The key without surrounding whitespace (a key read from a file keeps its newline);
    None if empty. Any other control or non-ASCII character is refused without showing it."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise ConfigError(f"the API key ({where}) must be a string")
    key = key.strip()
    bad = next((i for i, ch in enumerate(key) if not " " <= ch <= "~"), None)
    if bad is not None:
        raise ConfigError(f"the API key ({where}) has a control or non-ASCII character at position "
                          f"{bad}; copy it again")
    return key or None


def _proxy(value: Any) -> str | None:
    """None: from the environment; "none": no proxy; else a checked proxy URL."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("proxy must be a URL like http://host:port, or 'none'")
    if value.strip().lower() in ("", "none"):
        return "none"
    return check_proxy(value)


def _env_name(value: Any) -> str | None:
    if value is None:
        return None  # the provider's
    if not isinstance(value, str) or not value.strip() or "=" in value or "\0" in value:
        raise ConfigError(f"api_key_env must be a string naming an environment variable, got {value!r:.60}")
    return value.strip()


def _provider(value: Any) -> str | None:
    if value is None:
        return None
    from chatmagic.providers.profiles import profile
    return profile(str(value).strip().lower()).name


def _headers(value: Any) -> dict[str, str]:
    """Extra request headers: names are HTTP tokens, values have no control characters (a
    newline would smuggle in a header of its own). Values are never shown."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("headers must be a dict of header names to values")
    for name, text in value.items():
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
            raise ConfigError(f"header name {name!r} is not a valid HTTP header name")
        if not isinstance(text, str) or any(not " " <= c <= "~" and c != "\t" for c in text):
            raise ConfigError(f"header {name}: the value must be printable ASCII text (not shown)")
    return {k: v.strip() for k, v in value.items()}


def parse_header(text: str) -> tuple[str, str]:
    """``Name: value`` from ``--header`` into a (name, value) pair."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ConfigError("--header expects 'Name: value', e.g. --header 'X-Title: my notebook'")
    return name.strip(), value.strip()


def check_identifier(name: Any) -> str:
    """A variable name for ``-o``."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"-o {name!r} is not a valid Python variable name")
    return name


#: Every option, in the order of ``%%chatmany?`` and README's flag table.
#:
#: To add an option, add one row here. From it follow: the field of ``Settings`` (scope ENGINE,
#: also a keyword of chat_many/achat_many) or of ``CellOptions`` (scope MAGIC, %%chatmany only),
#: the ``%config ChatMany.<name>`` trait (``config=True``), the flag (``flags=``), their help with
#: the default, the checks of ``resolve`` (from ``type``, ``minimum``, ``positive`` or ``check``)
#: and ``%%chatmany?``. Then write the code that uses it, and paste the README row that
#: tests/test_options.py prints when README's flag table is out of step.
#: A bool flag spelt ``--no-X`` turns its option off; a dict flag takes ``KEY=JSON`` and repeats.
OPTIONS: tuple[Option, ...] = (
    Option("out", str, "chatmany_results", "variable to store the results in", flags=("-o", "--out"),
           metavar="NAME", scope=MAGIC, check=check_identifier),
    Option("model", str, "gpt-4o-mini", "model name, or a,b,c to send every prompt to each",
           flags=("-m", "--model"), metavar="NAME", env="CHATMAGIC_MODEL", check=_nonempty_name("model")),
    Option("concurrency", int, 16, "requests in flight at most", flags=("-c", "--concurrency"),
           metavar="N", minimum=1),
    # a long completion from a busy hosted API can take a minute or two; a stalled one is cut here
    Option("timeout", float, 120.0, "seconds per attempt; a stalled request is cut and retried "
           "(one the server holds with blank lines, queued, gets up to 10 min more)",
           flags=("-t", "--timeout"), metavar="SECONDS", positive=True),
    Option("connect_timeout", float, 10.0, "seconds to open a connection, per attempt", config=False,
           positive=True),
    Option("retries", int, 6, "retries after the first attempt (429s are not counted: they are pacing); 0 for none",
           flags=("-r", "--retries"),
           metavar="N", minimum=0),
    Option("max_retry_wait", float, 60.0, "the longest wait a server may ask for that is honoured, in seconds",
           config=False, positive=True),
    Option("system", str, None, "system prompt sent with every prompt; with `--over` a template like the cell",
           flags=("--system",), metavar="TEXT"),
    Option("temperature", float, None, "sampling temperature", flags=("--temperature",), metavar="X",
           unset="server's", minimum=0),
    Option("max_tokens", int, None, "most tokens per answer", flags=("--max-tokens",), metavar="N",
           unset="server's", minimum=1),
    Option("image_detail", str, None, "OpenAI's detail for every image: `low` (85 tokens each, 512 px), `high` or "
           "`auto`", flags=("--image-detail",), metavar="LEVEL", unset="server's", check=_image_detail),
    Option("params", dict, None, "any other request body field, repeatable: `-p seed=42 -p 'stop=[\"###\"]'`",
           flags=("-p", "--param"), metavar="KEY=JSON", check=_params),
    Option("provider", str, None, "who serves the models: `openai`, `azure`, `anthropic`, `gemini`, `groq`, "
           "`openrouter`, ... (see Providers); or write the model `PROVIDER:MODEL`", flags=("--provider",),
           metavar="NAME", env="CHATMAGIC_PROVIDER", unset="`$CHATMAGIC_PROVIDER`, else `openai`", check=_provider),
    Option("base_url", str, None, "API base URL", flags=("--base-url",), metavar="URL",
           unset="`$<PROVIDER>_BASE_URL`, else the provider's", check=_http_url),
    Option("api_key_env", str, None, "environment variable holding the API key",
           flags=("--api-key-env",), metavar="NAME", unset="`<PROVIDER>_API_KEY`", check=_env_name),
    Option("api_key", str, None, "the API key itself (never shown)", config=False, unset="$<api_key_env>",
           secret=True, check=clean_key),
    Option("api_version", str, None, "Azure's API version, sent as `?api-version=`", flags=("--api-version",),
           metavar="DATE", unset="`2024-10-21` for azure deployments"),
    # no %config trait: `%config ChatMany` would print the values
    Option("headers", dict, None, "an extra request header, repeatable: `--header 'X-Title: my notebook'` "
           "(values never shown)", flags=("--header",), metavar="'NAME: VALUE'", secret=True, check=_headers,
           item=parse_header, config=False),
    Option("rpm", float, None, "requests per minute at most", flags=("--rpm",), metavar="N",
           unset="learnt from the server", positive=True),
    Option("tpm", float, None, "tokens per minute at most (estimated from text + max_tokens)",
           flags=("--tpm",), metavar="N", unset="learnt from the server", positive=True),
    Option("proxy", str, None, "proxy for every request, e.g. `http://proxy:3128`; `none` for none",
           flags=("--proxy",), metavar="URL", unset="$HTTPS_PROXY or $HTTP_PROXY, except $NO_PROXY hosts",
           check=_proxy),
    # far above any real completion; bounds memory against endless bodies and gzip bombs
    Option("max_response_mb", float, 8.0, "largest answer accepted, in MB after decompression; a larger "
           "one fails its prompt", positive=True),
    Option("over", str, None, "the cell is one template, rendered per item of the list, Series or "
           "DataFrame `NAME` (see Prompts from data)", flags=("--over",), metavar="NAME", scope=MAGIC, config=False),
    Option("images", str, None, "with `--over`: the column (or `item`) holding each row's images or PDFs: "
           "a path, URL, bytes, PIL image or a list of them", flags=("--images",), metavar="COL", scope=MAGIC,
           config=False),
    Option("messages", str, None, "with `--over`: the column holding each row's conversation, a list of "
           "{role, content}; the cell, if any, is the last user turn", flags=("--messages",), metavar="COL",
           scope=MAGIC, config=False),
    Option("sep", str, None, "prompts are separated by lines equal to `TEXT` (multi-line prompts)",
           flags=("--sep",), metavar="TEXT", scope=MAGIC, config=False),
    Option("json", bool, False, "ask for a JSON object (`response_format`) and parse each answer",
           flags=("--json",)),
    Option("schema", object, None, "typed, checked answers: a concise spec, or a variable holding a pydantic "
           "model or JSON-schema dict (see Typed columns)", flags=("--schema",), metavar="SPEC",
           check=_schema),
    Option("batch", bool, False, "send through the provider's Batch API (half price, results within 24 h); "
           "see below", flags=("--batch",)),
    Option("wait", bool, True, "with `--batch`: wait for the results (`--no-wait`: submit and return at once; "
           "a re-run collects)", flags=("--no-wait",)),
    Option("dry_run", bool, False, "send nothing: show the requests, the first prompts, a token and cost "
           "estimate", flags=("--dry-run",), scope=MAGIC, config=False),
    Option("refresh", bool, False, "send every prompt again and replace its cached answer", flags=("--refresh",)),
    Option("cache", bool, True, "read and write the answer cache (`--no-cache`: neither)", flags=("--no-cache",)),
    Option("df", bool, False, "store a pandas DataFrame instead of a list", flags=("--df",), scope=MAGIC),
    Option("quiet", bool, False, "no progress bar (`progress=False`)", flags=("-q", "--quiet"), scope=MAGIC),
    Option("progress", bool, True, "show a progress bar", config=False),
    Option("prices", dict, None, 'dollars per 1M tokens, over the bundled price data: {"model": [input, output]} '
           "(see Cost)", check=_prices),
    Option("max_cost", float, None, "stop sending before the run could spend more than `USD` dollars; the rest "
           "is not sent (see Cost)", flags=("--max-cost",), metavar="USD", unset="no cap", positive=True),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
#: The built-in default of every option.
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS}

@dataclass(frozen=True)
class Settings:
    """Everything a run needs, validated: one field per engine option of ``OPTIONS``, in its order
    (checked when this module is imported), with ``provider``, ``model``, ``base_url``,
    ``api_key_env``, ``api_key`` and ``api_version`` resolved for the (first) model; then
    ``routes``: each model of ``-m a,b`` as written -> where it goes (``for_model`` gives its
    settings). The API key and header values are kept out of the repr."""

    model: str
    concurrency: int
    timeout: float
    connect_timeout: float
    retries: int
    max_retry_wait: float
    system: str | None
    temperature: float | None
    max_tokens: int | None
    image_detail: str | None
    params: dict[str, Any]
    provider: str
    base_url: str
    api_key_env: str
    api_key: str | None = field(repr=False)
    api_version: str | None
    headers: dict[str, str] = field(repr=False)
    rpm: float | None
    tpm: float | None
    proxy: str | None
    max_response_mb: float
    json: bool
    schema: Schema | None
    batch: bool
    wait: bool
    refresh: bool
    cache: bool
    progress: bool
    prices: dict[str, Any] | None
    max_cost: float | None
    routes: dict[str, Route] = field(default_factory=dict, repr=False, compare=False)  # not an option

    @property
    def dialect(self) -> Dialect:
        """The wire dialect of this provider (see providers/dialect.py)."""
        from chatmagic.providers.profiles import dialect, profile
        return dialect(profile(self.provider).dialect)

    @property
    def url(self) -> str:
        """Where one prompt is POSTed; also the cache's and the throttle's name for the server."""
        return self.dialect.url(self)

    @property
    def models(self) -> list[str]:
        """The model names as the user wrote them (``-m a,b``: both), in order."""
        return list(self.routes) or [self.model]

    def for_model(self, name: str) -> Settings:
        """The settings of one model of ``models``: its provider, base URL, key."""
        r = self.routes.get(name)
        if r is None:
            raise ConfigError(f"model {name!r} is not one of {', '.join(self.models)}")
        return self.replace(provider=r.provider, model=r.model, base_url=r.base_url, api_key_env=r.api_key_env,
                            api_key=r.api_key, api_version=r.api_version, routes={name: r})

    @property
    def system_prompt(self) -> str | None:
        """The system prompt sent: ``system``, then the schema's instruction. Appended to it rather
        than sent as a second system message, which some chat templates refuse."""
        parts = [self.system, self.schema.instruction() if self.schema is not None else None]
        return "\n\n".join(p for p in parts if p) or None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (already valid values)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CellOptions:
    """The options only %%chatmany uses (out, df, quiet, ...), validated: one field per
    magic option of ``OPTIONS``, in its order."""

    out: str
    over: str | None
    images: str | None
    messages: str | None
    sep: str | None
    dry_run: bool
    df: bool
    quiet: bool


def _check_fields(cls: type, scope: str) -> None:
    """The dataclass has one field per option of ``scope``, in the table's order, secret ones out
    of the repr: an option added to the table without its field fails here, at import, by name."""
    want = [o for o in OPTIONS if o.scope == scope]
    have = {f.name: f for f in dataclasses.fields(cls) if f.name != "routes"}  # Settings.routes: derived
    missing = [o.name for o in want if o.name not in have]
    extra = [n for n in have if n not in BY_NAME or BY_NAME[n].scope != scope]
    if missing or extra or list(have) != [o.name for o in want]:
        raise TypeError(f"{cls.__name__} must have one field per {scope} option, in the order of OPTIONS: "
                        f"missing {missing}, not options {extra}")
    shown = [o.name for o in want if have[o.name].repr == o.secret]
    if shown:
        raise TypeError(f"{cls.__name__}: repr=False is for secret options only: {shown}")


_check_fields(Settings, ENGINE)
_check_fields(CellOptions, MAGIC)


def resolve(*layers: Mapping[str, Any], environ: Mapping[str, str] | None = None,
            need_key: bool = True, served: Mapping[str, str] | None = None) -> Settings:
    """Merge option layers (highest precedence first) with the environment and defaults.
    ``need_key=False`` (a dry run, which sends nothing) accepts a missing API key. ``served``
    (chat URL -> model) names the model of servers that have one, the local model's: the
    default model when the URL is theirs and no layer or environment variable names one."""
    environ = os.environ if environ is None else environ
    engine = [o for o in OPTIONS if o.scope == ENGINE]
    unknown = {k for layer in layers for k in layer} - {o.name for o in engine}
    if unknown:
        raise ConfigError(f"unknown option: {', '.join(sorted(unknown))}")
    merged = _merged(engine, layers, environ)
    if merged["schema"] is not None and merged["json"]:
        raise ConfigError("--schema and --json together: --schema already asks for JSON "
                          "(checked against the schema); drop --json")
    routes = _routes(merged, environ, need_key)
    first = next(iter(routes.values()))
    local = (served or {}).get(first.base_url.rstrip("/") + "/chat/completions")
    if local and not any(layer.get("model") is not None for layer in layers) and not environ.get("CHATMAGIC_MODEL"):
        # chatmagic's own local server answers as its model, so that is the default there, and only
        # there: %chatmany_local sets no model, which a cell with another --base-url would receive
        merged["model"] = local
        routes = _routes(merged, environ, need_key)
        first = next(iter(routes.values()))
    if merged["batch"] and any(r.provider == "azure" for r in routes.values()):
        # Azure's batches need a global-batch deployment, files at the resource root and other line URLs
        raise ConfigError("--batch is not written for Azure yet; run without --batch")
    one = len(routes) == 1
    return Settings(**{**merged, "provider": first.provider, "model": first.model if one else merged["model"],
                       "base_url": first.base_url, "api_key_env": first.api_key_env, "api_key": first.api_key,
                       "api_version": first.api_version}, routes=routes)


def _routes(merged: dict[str, Any], environ: Mapping[str, str], need_key: bool) -> dict[str, Route]:
    """Model name as written -> its ``Route``, with the key read and checked."""
    from chatmagic.providers.profiles import dialect, profile, route, split_model
    names = [m.strip() for m in merged["model"].split(",")]
    if not all(names):
        raise ConfigError(f"-m {merged['model']!r}: a model name is empty")
    names = list(dict.fromkeys(names))
    given = {k: merged[k] for k in ("provider", "base_url", "api_key_env", "api_key", "api_version")}
    mixed = len({split_model(m)[0] or given["provider"] or "openai" for m in names}) > 1
    routes = {}
    for name in names:
        r = route(name, given, environ, mixed=mixed)
        _http_url(r.base_url)
        dialect(profile(r.provider).dialect)  # imported now: a dialect that is missing fails here
        if r.api_key is None:
            key = clean_key(environ.get(r.api_key_env), f"${r.api_key_env}")
            if key is None and need_key and not is_loopback(r.base_url):
                whose = f" (for {name})" if len(names) > 1 else ""
                raise ConfigError(f"no API key{whose}: set ${r.api_key_env}, run %chatmany_local for the "
                                  "small local model, or point --base-url at a local server (which needs none)")
            r = dataclasses.replace(r, api_key=key)
        routes[name] = r
    return routes


def resolve_cell(flags: Mapping[str, Any], defaults: Mapping[str, Any], *,
                 environ: Mapping[str, str] | None = None,
                 served: Mapping[str, str] | None = None) -> tuple[Settings, CellOptions]:
    """The settings and the magic's own options of one %%chatmany cell, from its parsed flags
    (``argparse`` values by option name) and the ``%config ChatMany`` defaults."""
    environ = os.environ if environ is None else environ
    flags = {k: dict((BY_NAME[k].item or parse_param)(p) for p in v)
             if BY_NAME[k].type is dict and isinstance(v, list) else v for k, v in flags.items()}
    layers = (flags, defaults)
    cell = CellOptions(**_merged([o for o in OPTIONS if o.scope == MAGIC], layers, environ))
    engine = [{k: v for k, v in layer.items() if BY_NAME[k].scope == ENGINE} for layer in layers]
    return resolve(*engine, {"progress": not cell.quiet}, environ=environ, need_key=not cell.dry_run,
                   served=served), cell


def _merged(options: Iterable[Option], layers: Iterable[Mapping[str, Any]],
            environ: Mapping[str, str]) -> dict[str, Any]:
    layers = list(layers)
    merged = {}
    for o in options:
        value = next((layer[o.name] for layer in layers if layer.get(o.name) is not None), None)
        if value is None and o.env:
            value = environ.get(o.env) or None
        merged[o.name] = _checked(o, o.default if value is None else value)
    return merged


def _checked(o: Option, value: Any) -> Any:
    """``value`` converted to the option's type, or one clear ConfigError."""
    if o.check is not None:
        return o.check(value)
    if value is None:
        return None
    if o.type in (int, float):
        return _number(o, value)
    if o.type is bool and not isinstance(value, bool):
        raise ConfigError(f"{o.name} must be True or False, got {value!r}")
    if o.type is str and not isinstance(value, str):
        raise ConfigError(f"{o.name} must be a string" + ("" if o.secret else f", got {value!r}"))
    if o.type is dict and not isinstance(value, dict):
        raise ConfigError(f"{o.name} must be a dict, got {type(value).__name__}")
    return value


def _number(o: Option, value: Any) -> int | float:
    try:
        if isinstance(value, bool) or (o.type is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number: int | float = o.type(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{o.name} must be {'a whole' if o.type is int else 'a'} number, got {value!r}") from None
    if not math.isfinite(number):  # NaN is no JSON, and an infinite timeout overflows
        raise ConfigError(f"{o.name} must be a finite number, got {value!r}")
    if (o.positive and not number > 0) or (o.minimum is not None and number < o.minimum):
        bound = "positive" if o.positive else f"at least {o.minimum:g}"
        raise ConfigError(f"{o.name} must be {bound}, got {value!r}")
    return number


def parse_param(text: str) -> tuple[str, object]:
    """``KEY=JSON`` from ``-p`` into a (key, value) pair."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"-p {text!r}: expected KEY=JSON, e.g. -p seed=42")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"-p {text!r}: the value is not JSON (quote strings: {key.strip()}='\"{raw}\"')") from None
