"""The option table: README, the flags, the traits and the settings all follow from it."""

import dataclasses
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import chatmagic
from chatmagic import settings as config
from chatmagic.settings import OPTIONS

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def ip_magic():
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext chatmagic")
    yield shell
    shell.run_cell("%unload_ext chatmagic")


def readme_row(o: config.Option) -> str:
    flag = "/".join(o.flags) + (f" {o.metavar}" if o.metavar and o.type is not bool else "")
    trait = f"`{o.name}`" + (" (a dict)" if o.type is dict else "") if o.config else ""
    return f"| `{flag}` | {trait} | {o.shown_default(code=True)} | {o.help} |"


def test_readme_flag_table_is_the_option_table():
    lines = README.read_text().splitlines()
    start = lines.index("| flag | `%config ChatMany.` | default | meaning |") + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    expected = [readme_row(o) for o in OPTIONS if o.flags]
    assert lines[start:end] == expected, "README's flag table should be:\n" + "\n".join(expected)


def test_readme_names_every_keyword_and_trait():
    text = README.read_text()
    api = text[text.index("## Python API"):]
    api = api[:api.index("\n## ")]
    for o in OPTIONS:
        if o.keyword:
            assert f"`{o.name}`" in api or re.search(rf"\b{o.name}\b", api), o.name
        if o.config:
            assert f"ChatMany.{o.name}" in text or f"`{o.name}`" in text, o.name


def test_every_flag_shows_its_default_from_the_table(ip_magic):
    doc = ip_magic.find_cell_magic("chatmany").__doc__
    squeezed = re.sub(r"\s+", "", doc)  # argparse wraps lines, also inside words with hyphens
    for o in OPTIONS:
        if o.flags:
            shown = re.sub(r"\s+", "", f"{o.plain_help} (default: {o.shown_default()})")
            assert all(f in doc for f in o.flags) and shown in squeezed, o.name
    assert "(default:16)" in squeezed and "(default:120)" in squeezed and "(default:6)" in squeezed


def test_every_config_option_is_a_trait_and_nothing_else(ip_magic):
    magics = ip_magic.magics_manager.registry["ChatMany"]
    traits = magics.class_traits(config=True)
    assert set(traits) == {o.name for o in OPTIONS if o.config}
    for o in OPTIONS:
        if o.config:
            assert f"(default: {o.shown_default()})" in traits[o.name].help


def test_settings_and_cell_options_have_one_field_per_option():
    import dataclasses
    engine = [f.name for f in dataclasses.fields(config.Settings)]
    magic = [f.name for f in dataclasses.fields(config.CellOptions)]
    assert engine == [o.name for o in OPTIONS if o.scope == config.ENGINE] + ["routes"]  # each model's route
    assert magic == [o.name for o in OPTIONS if o.scope == config.MAGIC]
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)


def test_params_flag_replaces_the_config_default_like_every_option():
    local = {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
    settings, _ = config.resolve_cell({"params": ["seed=1"]}, {"params": {"stop": ["x"]}}, environ=local)
    assert settings.params == {"seed": 1}
    settings, _ = config.resolve_cell({"params": None}, {"params": {"stop": ["x"]}}, environ=local)
    assert settings.params == {"stop": ["x"]}


def test_magic_only_options_resolve_in_one_place():
    local = {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
    settings, cell = config.resolve_cell({"quiet": None, "out": "x"}, {"quiet": True, "out": "y", "df": True},
                                         environ=local)
    assert (cell.out, cell.df, cell.quiet, cell.dry_run) == ("x", True, True, False)
    assert settings.progress is False
    settings, cell = config.resolve_cell({}, {}, environ=local)
    assert (cell.out, cell.df, cell.quiet, settings.progress) == ("chatmany_results", False, False, True)


@pytest.mark.parametrize("function", [chatmagic.chat_many, chatmagic.achat_many])
def test_api_keywords_are_the_engine_options(function):
    signature = inspect.signature(function, eval_str=True)
    keywords = [p for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert keywords[-1].name == "memory" and keywords[-1].default is None  # what runs learn: not an option
    keywords = keywords[:-1]
    assert [p.name for p in keywords] == [o.name for o in OPTIONS if o.keyword]
    for p in keywords:
        o = config.BY_NAME[p.name]
        nullable = o.default is None or o.env is not None  # None: the environment, else the default
        assert p.default == (None if nullable else o.default), p.name
        kinds = typing.get_args(p.annotation) or (p.annotation,)
        assert {typing.get_origin(k) or k for k in kinds} == ({o.type, type(None)} if nullable else {o.type}), p.name
        assert o.plain_help in function.__doc__


def test_every_keyword_reaches_resolve_by_its_name(monkeypatch):
    """achat_many hands each keyword on by name (no locals()): a distinct value per keyword arrives
    under that keyword's name."""
    import asyncio

    import chatmagic.api
    seen: dict = {}

    def capture(options, **_):  # served= too
        seen.update(options)
        raise config.ConfigError("captured")
    monkeypatch.setattr(chatmagic.api, "resolve", capture)
    values = {o.name: object() for o in OPTIONS if o.keyword}
    with pytest.raises(config.ConfigError, match="captured"):
        asyncio.run(chatmagic.achat_many(["x"], **values))
    assert seen.keys() == values.keys() and all(seen[k] is v for k, v in values.items())


@pytest.mark.parametrize(("cls", "scope"), [(config.Settings, config.ENGINE), (config.CellOptions, config.MAGIC)])
def test_each_option_is_a_typed_field(cls, scope):
    """Settings and CellOptions are written out (so ``settings.tmeout`` is a type error), one field
    per option, typed as the table says: the option's type, or None too when it has no default."""
    from chatmagic.core.schema import Schema
    from chatmagic.providers.profiles import Route
    hints = typing.get_type_hints(cls, {**vars(config), "Schema": Schema, "Route": Route})
    hints.pop("routes", None)  # Settings.routes: each model's route, derived by resolve (no option)
    options = [o for o in OPTIONS if o.scope == scope]
    assert list(hints) == [o.name for o in options]
    for o in options:
        kinds = {typing.get_origin(k) or k for k in typing.get_args(hints[o.name]) or (hints[o.name],)}
        if o.check is None:
            assert kinds == ({o.type} if o.default is not None else {o.type, type(None)}), o.name
    assert hints["schema" if scope == config.ENGINE else "out"] in (Schema | None, str)
    assert not hasattr(cls, "__getattr__")  # no catch-all: a misspelt name is an AttributeError, and a mypy error


def test_an_option_without_its_field_fails_at_import_by_name():
    @dataclasses.dataclass(frozen=True)
    class Short:
        model: str
    with pytest.raises(TypeError, match=r"missing \['concurrency'"):
        config._check_fields(Short, config.ENGINE)


# Adding an option is one row and its typed field: a test-only option added to the table's source
# shows up as a Settings field with its checks, a %config trait, a flag with its default in %%chatmany?.
PROBE = """
import sys
import typing
from pathlib import Path
import chatmagic
source = Path(chatmagic.__file__).with_name("settings.py").read_text()
row = 'Option("probe", int, 3, "a test-only option", flags=("--probe",), metavar="N", minimum=1),'
source = source.replace("OPTIONS: tuple[Option, ...] = (", "OPTIONS: tuple[Option, ...] = (" + row, 1)
source = source.replace("class Settings:\\n", "class Settings:\\n    probe: int\\n", 1)
import types
module = types.ModuleType("chatmagic.settings")
module.__package__ = "chatmagic"
sys.modules["chatmagic.settings"] = module
exec(compile(source, "settings.py", "exec"), module.__dict__)
from chatmagic.settings import ConfigError, resolve
local = {"base_url": "http://127.0.0.1:1/v1"}
assert resolve(local).probe == 3 and resolve({**local, "probe": "7"}).probe == 7
try:
    resolve({**local, "probe": 0})
    raise SystemExit("no error")
except ConfigError as e:
    print(e)
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_cell("%load_ext chatmagic")
ip.run_cell("%config ChatMany.probe = 5")
magics = ip.magics_manager.registry["ChatMany"]
print(magics.probe)
args = vars(magics.chatmany.parser.parse_args(["--probe", "9"]))
settings, _ = module.resolve_cell(args, {"probe": magics.probe}, environ={"OPENAI_BASE_URL": local["base_url"]})
print(settings.probe)
print(" ".join(ip.find_cell_magic("chatmany").__doc__.split()))
"""


def test_an_option_is_one_row_of_the_table():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    error, trait, flag, doc = out.splitlines()
    assert (error, trait, flag) == ("probe must be at least 1, got 0", "5", "9")
    assert "--probe N a test-only option (default: 3)" in doc
