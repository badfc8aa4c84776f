"""The public API: what `import chatmagic` exposes, and what it costs."""

import subprocess
import sys
import types

import chatmagic


def test_all_lists_exactly_the_public_names():
    public = {name for name, value in vars(chatmagic).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert set(chatmagic.__all__) == public
    for name in chatmagic.__all__:
        assert getattr(chatmagic, name).__doc__, f"{name} has no docstring"


def test_import_loads_nothing_heavy():
    code = ("import sys, chatmagic; print(sorted(m for m in ('IPython', 'pandas', 'aiohttp', 'tenacity', "
            "'tqdm', 'ipywidgets', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_errors_render_as_one_line():
    err = chatmagic.RunAborted(chatmagic.RequestError("Incorrect API key", status=401, code="invalid_api_key"))
    assert err._render_traceback_() == ["RunAborted: 401 invalid_api_key: Incorrect API key"]
    assert isinstance(chatmagic.ConfigError("x"), ValueError)  # bad input is a ValueError too
