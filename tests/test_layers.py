"""The package's layers (docs/architecture.md): every import, also one inside a function or under
``if TYPE_CHECKING:``, goes down the layers or stays in its own, and no set of modules imports
itself round in a circle. Read from the source with ``ast``, so a lazy import counts too."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chatmagic"

#: Bottom first. A module belongs to the layer of its longest matching prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("chatmagic.errors", "chatmagic.providers.hints"),  # errors carry hints: what a server said about waiting
    ("chatmagic.providers",),   # wire dialects: no I/O
    ("chatmagic.transport",),   # the aiohttp edge
    ("chatmagic.core", "chatmagic.settings", "chatmagic.results"),  # the run, its options, its records
    ("chatmagic.batch",),       # the Batch API, driving a core Run
    ("chatmagic.practice",),    # practice servers, the local model
    ("chatmagic.api",),         # chat_many / achat_many
    ("chatmagic.notebook",),    # IPython: the magics and what only a cell needs
    ("chatmagic",),             # __init__: the public names
)
#: Imported at module level only by the notebook layer (import chatmagic stays light).
HEAVY = ("IPython", "tqdm", "pandas", "ipywidgets", "matplotlib")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = max((prefix for layer in LAYERS for prefix in layer
                if module == prefix or module.startswith(prefix + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every chatmagic import in ``path``;
    ``from chatmagic.x import y`` counts as importing ``chatmagic.x.y`` when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) in top) for n in names if n == "chatmagic" or n.startswith("chatmagic.")]
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {name for name, _, _ in imports(p, set(mods))} - {m} for m, p in mods.items()}


def test_every_import_goes_down_or_stays_in_its_layer():
    mods = modules()
    upward = [f"{m}:{line} imports {name} ({'module level' if top else 'lazily'})"
              for m, p in mods.items() for name, line, top in imports(p, set(mods))
              if layer_of(name) > layer_of(m)]
    assert upward == []


def circles(edges: dict[str, set[str]]) -> list[str]:
    """Every circle a depth-first walk meets, as "a -> b -> a"."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    found: list[str] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                found.append(" -> ".join([*path[path.index(n):], n]))
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_circles():
    edges = graph()
    assert sum(map(len, edges.values())) > 50  # the walk found the imports (a broken walk finds none)
    assert "chatmagic.core.engine" in edges["chatmagic.api"]  # a lazy one, inside a function
    assert circles(edges) == []


def test_nothing_below_the_notebook_imports_ipython_tqdm_or_pandas_at_import_time():
    notebook = layer_of("chatmagic.notebook")
    heavy = []
    for m, p in modules().items():
        if layer_of(m) >= notebook:
            continue
        for node in ast.parse(p.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            heavy += [f"{m}:{node.lineno} {n}" for n in names if n.split(".")[0] in HEAVY]
    assert heavy == []


@pytest.mark.parametrize(("module", "layer"), [
    ("chatmagic.providers.hints", 0), ("chatmagic.providers.openai", 1), ("chatmagic.results", 3),
    ("chatmagic.core.engine", 3), ("chatmagic.notebook.magics", 7), ("chatmagic", 8)])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path):
    """The walk itself: a lazy upward import and a two-module circle are found."""
    (tmp_path / "a.py").write_text("def f():\n    from chatmagic.notebook import magics\n")
    found = imports(tmp_path / "a.py", {"chatmagic.notebook.magics"})
    assert found == [("chatmagic.notebook.magics", 2, False)]
    assert layer_of(found[0][0]) > layer_of("chatmagic.core.engine")
    assert circles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == ["x -> y -> z -> x"]


RESULTS_ATTRIBUTES = {"elapsed_s", "retries", "batch", "batch_ids", "timeline", "notes", "schema", "model"}


def test_results_attributes_are_set_only_in_results_py():
    """The run's modules tell a Results what happened (``retried``, ``finished``, ``pending_in``);
    none assigns its attributes or appends to its notes."""
    found = []
    for m, p in modules().items():
        if m == "chatmagic.results":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else [])
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                targets = [node.func.value]  # results.notes.extend(...)
            for t in targets:
                for part in ast.walk(t):
                    if (isinstance(part, ast.Attribute) and part.attr in RESULTS_ATTRIBUTES
                            and ast.unparse(part.value).endswith("results")):
                        found.append(f"{m}:{node.lineno} {ast.unparse(part)}")
    assert found == []


def test_no_module_reads_another_objects_private_members():
    """``x._name`` only for ``self`` and ``cls``: a batch run talks to its Run through ``from_cache``,
    ``request_keys``, ``head``, ``keep`` and ``decode``, not its ``_cache`` or ``_keys``."""
    found = [f"{m}:{node.lineno} {ast.unparse(node)}"
             for m, p in modules().items() for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
             and ast.unparse(node.value) not in ("self", "cls", "os")]  # os._exit: a forked child's exit
    assert found == []


TIMEY = ("elapsed", "took", "perf_counter", "monotonic", "time.time")


def _numeric(node: ast.expr) -> bool:
    return all(isinstance(n, ast.Constant | ast.BinOp | ast.UnaryOp | ast.operator | ast.unaryop)
               for n in ast.walk(node))


def test_no_test_asserts_wall_time():
    """Time in tests comes from a fake clock, polling or the run's own record of its waits; a speed
    is a benchmark's (tests/benchmarks/); a crawl fails a deadline (``@pytest.mark.timeout``). So no
    ``assert results.elapsed_s < 10`` or ``took < 1.0``: a number compared with a measured time."""
    found = []
    for path in sorted((PACKAGE.parent / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assert):
                found += [f"{path.name}:{node.lineno} {ast.unparse(node.test)}" for _ in _timed(node.test)]
    assert found == []
    bad = ast.parse("assert results.elapsed_s < 60 / 20 * 2\nassert 1.9 <= took\nassert t < deadline\n"
                    "assert 0 <= start <= results.elapsed_s")
    assert [len(list(_timed(n.test))) for n in bad.body] == [1, 1, 0, 0]  # not a deadline, nor an order


def _timed(test: ast.expr):
    """Comparisons of a measured time with a number, side by side in ``test``."""
    for cmp in (n for n in ast.walk(test) if isinstance(n, ast.Compare)):
        sides = [cmp.left, *cmp.comparators]
        for a, b in itertools.pairwise(sides):
            if any(_numeric(x) and any(t in ast.unparse(y) for t in TIMEY) for x, y in ((a, b), (b, a))):
                yield cmp


def test_docs_architecture_names_every_module():
    """docs/architecture.md matches the tree: every module is named there as `path/to/module.py`,
    and every module it names exists."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    unnamed = sorted(f for f in files if not f.endswith(("__init__.py", "__main__.py")) and f"`{f}`" not in doc)
    named = {n for n in re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", doc) if not n.startswith("tests/")}
    assert unnamed == [] and sorted(named - files) == []


STRICT_FLAGS = ("disallow_untyped_defs", "disallow_incomplete_defs", "disallow_untyped_calls", "disallow_any_generics",
                "warn_return_any", "disallow_untyped_decorators", "disallow_subclassing_any", "check_untyped_defs",
                "no_implicit_reexport", "strict_equality", "warn_unused_ignores", "extra_checks")


def test_mypy_is_strict_for_every_module():
    """``strict = true`` in pyproject.toml, and no override turns one of its checks off for some modules
    (the way to silence an error is to fix it, or a ``# type: ignore[code]`` on its line)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and config["files"] == ["chatmagic"]
    relaxed = [(o["module"], flag) for o in config.get("overrides", []) for flag in STRICT_FLAGS
               if o.get(flag) is False]
    assert relaxed == []
