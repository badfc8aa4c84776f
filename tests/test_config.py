import pytest

from chatmagic.errors import ConfigError
from chatmagic.settings import DEFAULTS, is_loopback, parse_param, resolve

LOCAL = {"base_url": "http://127.0.0.1:1/v1"}


def test_precedence_flag_over_config_over_env_over_default():
    env = {"CHATMAGIC_MODEL": "env-model", "OPENAI_API_KEY": "k"}
    assert resolve({}, environ=env).model == "env-model"
    assert resolve({}, {"model": "cfg-model"}, environ=env).model == "cfg-model"
    assert resolve({"model": "flag"}, {"model": "cfg-model"}, environ=env).model == "flag"
    assert resolve({}, environ={"OPENAI_API_KEY": "k"}).model == DEFAULTS["model"]
    # None means "not set" at every layer
    assert resolve({"model": None}, {"model": "cfg"}, environ=env).model == "cfg"


def test_base_url_from_environment_and_key_from_named_variable():
    s = resolve({"api_key_env": "MY_KEY"}, environ={"OPENAI_BASE_URL": "https://x.example/v1", "MY_KEY": "sk-1"})
    assert s.base_url == "https://x.example/v1" and s.api_key == "sk-1"
    assert s.url == "https://x.example/v1/chat/completions"


def test_missing_key_is_an_error_except_on_loopback():
    with pytest.raises(ConfigError, match=r"no API key: set \$OPENAI_API_KEY"):
        resolve({}, environ={})
    assert resolve(LOCAL, environ={}).api_key is None


def test_key_not_in_repr():
    s = resolve({"api_key": "sk-secret-123"}, environ={})
    assert "sk-secret-123" not in repr(s) and "sk-secret-123" not in str(s)


@pytest.mark.parametrize("options, message", [
    ({"concurrency": 0}, "concurrency must be at least 1"),
    ({"concurrency": -3}, "concurrency must be at least 1"),
    ({"concurrency": 2.5}, "concurrency must be a whole number"),
    ({"concurrency": "many"}, "concurrency must be a whole number"),
    ({"timeout": 0}, "timeout must be positive"),
    ({"timeout": -1.0}, "timeout must be positive"),
    ({"timeout": "soon"}, "timeout must be a number"),
    ({"retries": -1}, "retries must be at least 0"),
    ({"temperature": -0.5}, "temperature must be at least 0"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"rpm": 0}, "rpm must be positive"),
    ({"base_url": "ftp://host/v1"}, "base URL must start with http"),
    ({"base_url": "localhost:8000"}, "base URL must start with http"),
    ({"model": "  "}, "model must be a non-empty name"),
    ({"params": {"messages": []}}, "param 'messages' cannot be set"),
    ({"params": {"stream": True}}, "streaming is not supported"),
    ({"params": [1]}, "params must be a dict"),
    ({"colour": "red"}, "unknown option: colour"),
])
def test_bad_options_are_one_clear_line(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        resolve({**LOCAL, **options}, environ={})
    assert "\n" not in str(info.value)


def test_retries_zero_is_allowed_and_numbers_are_converted():
    s = resolve({**LOCAL, "retries": 0, "concurrency": "8", "timeout": "2.5"}, environ={})
    assert (s.retries, s.concurrency, s.timeout) == (0, 8, 2.5)


def test_body_params():
    s = resolve({**LOCAL, "temperature": 0, "max_tokens": 5, "params": {"seed": 1}}, environ={})
    assert s.dialect.head(s) == {"model": "gpt-4o-mini", "temperature": 0.0, "max_tokens": 5, "seed": 1,
                                 "messages": []}


@pytest.mark.parametrize("text, expected", [
    ("seed=42", ("seed", 42)),
    ("stop=[\"END\"]", ("stop", ["END"])),
    ("response_format={\"type\": \"json_object\"}", ("response_format", {"type": "json_object"})),
    ("top_p=0.5", ("top_p", 0.5)),
    ("user=\"me\"", ("user", "me")),
    (" logprobs =true", ("logprobs", True)),
])
def test_parse_param(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text, message", [
    ("seed", "expected KEY=JSON"),
    ("=42", "expected KEY=JSON"),
    ("stop=END", "the value is not JSON"),
    ("x={bad", "the value is not JSON"),
])
def test_parse_param_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_param(text)


@pytest.mark.parametrize("url, local", [
    ("http://127.0.0.1:8000/v1", True), ("http://localhost/v1", True), ("http://[::1]:80/v1", True),
    ("http://127.5.0.1/v1", True), ("https://api.openai.com/v1", False), ("http://10.0.0.1/v1", False),
    ("http://localhost.evil.com/v1", False),
])
def test_is_loopback(url, local):
    assert is_loopback(url) is local
