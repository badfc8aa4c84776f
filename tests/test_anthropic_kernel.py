"""``-m openai:X,anthropic:Y`` side by side in a real kernel (nbclient): each model goes to its
own server, in its own dialect, with its own key, pacing and cache key."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from chatmagic.practice.anthropic import FakeAnthropic

pytestmark = pytest.mark.kernel

KEY = "sk-ant-kernel-test-key"


def test_openai_and_anthropic_models_side_by_side(server, monkeypatch):
    server.batch.reset()
    with FakeAnthropic(api_key=KEY) as claude:
        # written as the Anthropic SDK writes it: no /v1 (added for the request)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", claude.base_url.removesuffix("/v1"))
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c) for c in (
            "%load_ext chatmagic",
            "%%chatmany -q -o both -m openai:gpt-4o-mini,anthropic:claude-haiku-4-5 --schema 'label: yes|no'\n"
            "Is it?\nIs it not?",
            "print([sorted(d) for d in both])\n"
            "print(all(v['label'] in ('yes', 'no') for d in both for v in d.values()))",
            # the same cell through both providers' Batch APIs, then the listing of both
            "import chatmagic.batch.run\nchatmagic.batch.run.POLL_FIRST = 0.02",
            "%%chatmany -q --batch -o batched -m openai:gpt-4o-mini,anthropic:claude-haiku-4-5 --schema 'label: yes|no'"
            "\nb1\nb2",
            "print([sorted(d) for d in batched] == [sorted(d) for d in both]\n"
            "      and all(v['label'] in ('yes', 'no') for d in batched for v in d.values()))",
            "%chatmany_batches",
        )]
        NotebookClient(nb, timeout=60, kernel_name="python3").execute()
        printed = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.output_type == "stream")
        assert printed.splitlines() == ["[['anthropic:claude-haiku-4-5', 'openai:gpt-4o-mini'], "
                                        "['anthropic:claude-haiku-4-5', 'openai:gpt-4o-mini']]", "True"]
        summary = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream")
        assert summary.count("2/2 ok") == 2, summary
        # each server saw its own dialect: OpenAI's response_format, Anthropic's forced tool and key
        assert server.stats.requests == 2 and "response_format" in server.stats.params, server.stats.attempts
        assert claude.stats.requests == 2 and claude.stats.keys == {KEY}
        assert claude.stats.params["tool_choice"]["type"] == "tool" and "response_format" not in claude.stats.params
        assert not any(KEY in h for h in server.stats.auth_headers)  # the Anthropic key stayed with Anthropic
        assert "".join(o.get("text", "") for o in nb.cells[5].outputs if o.output_type == "stream").strip() == "True"
        assert server.batch.stats["batches"] == 1 and claude.batches.stats["batches"] == 1
        listing = "".join(o.get("text", "") for o in nb.cells[6].outputs if o.output_type == "stream")
        assert "msgbatch_fake0001" in listing and "batch_fake1" in listing and "completed" in listing
