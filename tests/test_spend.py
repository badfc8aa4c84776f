"""--max-cost against the practice server: never over the cap by the usage the answers returned,
the rest not sent (status cancelled, reason "cost cap"), one line, and a re-run sends only the rest."""

import nbformat
import pytest
from nbclient import NotebookClient

import chatmagic
from chatmagic.core.prices import money
from chatmagic.core.spend import REASON
from chatmagic.errors import ConfigError

#: Dollars per 1M tokens: large, so a few tokens are whole cents and the figures are easy to read.
PRICES = {"gpt-4o-mini": [1000.0, 2000.0]}
PROMPTS = [f"question number {i:03d} about the weather" for i in range(100)]


def run(server, prompts, **options):
    options.setdefault("model", "gpt-4o-mini")
    return chatmagic.chat_many(prompts, base_url=server.base_url, progress=False, prices=PRICES, **options)


def one_cost(server):
    """What one answer of PROMPTS costs, by the usage the server returns (all alike in length)."""
    first = run(server, PROMPTS[:1], cache=False)
    server.reset_stats()
    return first[0].cost


def test_a_cap_that_fits_about_40_of_100_is_never_passed_and_a_rerun_sends_only_the_rest(server):
    server.latency = 0.01
    cap = 40 * one_cost(server)
    results = run(server, PROMPTS, max_cost=cap, max_tokens=20, concurrency=8)
    ok = [r for r in results if r.ok]
    unsent = [r for r in results if not r.ok]
    assert sum(r.cost for r in ok) <= cap and results.cost <= cap  # by the usage actually returned
    assert 30 <= len(ok) <= 40, len(ok)
    assert server.stats.requests == len(ok)  # the rest never reached the server
    assert all(r.status == "cancelled" and r.error == REASON for r in unsent)
    assert results.summary().endswith(f"stopped at the cost cap of {money(cap)} after {len(ok)} of 100 prompts; "
                                      "raise --max-cost and run again to send the rest")
    again = run(server, PROMPTS, max_cost=100 * cap, max_tokens=20, concurrency=8)
    assert all(r.ok for r in again) and sum(r.cached for r in again) == len(ok)
    assert server.stats.requests == 100  # only the rest was sent
    assert "cost cap" not in again.summary()
    assert [r.text for r in again] == [f"echo: {p}" for p in PROMPTS]


def test_without_max_tokens_the_output_seen_so_far_bounds_the_rest(server):
    cap = 20 * one_cost(server)
    results = run(server, PROMPTS[:50], max_cost=cap, concurrency=4, cache=False)
    ok = sum(r.ok for r in results)
    assert results.cost <= cap and 10 <= ok <= 20 and server.stats.requests == ok


def test_a_cap_below_one_request_sends_nothing_and_says_so(server):
    results = run(server, PROMPTS[:5], max_cost=0.000001, cache=False)
    assert server.stats.requests == 0 and all(r.error == REASON for r in results)
    assert "stopped at the cost cap of <$0.0001 after 0 of 5 prompts" in results.summary()


def test_a_cap_that_fits_everything_changes_nothing(server):
    results = run(server, PROMPTS[:10], max_cost=100.0, cache=False)
    assert all(r.ok for r in results) and "cost cap" not in results.summary()


def test_a_cap_with_no_price_known_is_one_line_before_anything_is_sent(server):
    with pytest.raises(ConfigError, match=r"--max-cost needs a price for model 'my-model'.*ChatMany.prices"):
        chatmagic.chat_many(["a"], model="my-model", base_url=server.base_url, progress=False, max_cost=1.0)
    assert server.stats.requests == 0


@pytest.mark.parametrize("bad", [0, -1, "lots"])
def test_a_bad_cap_is_a_config_error(server, bad):
    with pytest.raises(ConfigError, match="max_cost"):
        run(server, ["a"], max_cost=bad)


@pytest.mark.kernel
def test_the_magic_stops_at_the_cap_in_a_real_kernel_and_a_rerun_sends_the_rest(server):
    cap = 10 * one_cost(server)
    cell = "\n".join(PROMPTS[:30])
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        "%load_ext chatmagic",
        f"%config ChatMany.prices = {PRICES!r}\n%config ChatMany.max_cost = {cap!r}",
        f"%%chatmany -o answers -q --max-tokens 20 --base-url {server.base_url}\n{cell}",
        "print(sum(a is not None for a in answers))",
        f"%%chatmany -o answers -q --max-tokens 20 --max-cost 10 --base-url {server.base_url}\n{cell}",
        "print(sum(a is not None for a in answers))",
    ]]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    shown = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.output_type == "stream")
    sent = int("".join(o.get("text", "") for o in nb.cells[3].outputs))
    assert 5 <= sent <= 10
    assert f"stopped at the cost cap of {money(cap)} after {sent} of 30 prompts" in shown
    assert int("".join(o.get("text", "") for o in nb.cells[5].outputs)) == 30
    assert server.stats.requests == 30  # the re-run sent only the rest


def test_with_batch_the_cap_applies_to_the_batchs_estimate_before_it_is_submitted(server, monkeypatch):
    from chatmagic.batch import run as batchmod
    server.batch.reset()
    monkeypatch.setattr(batchmod, "POLL_FIRST", 0.01)
    cap = 10 * one_cost(server) / 2  # ten answers at the batch price (half)
    results = run(server, PROMPTS[:30], batch=True, max_cost=cap, max_tokens=20)
    ok = [r for r in results if r.ok]
    # each request counted at its worst case (input estimate + max_tokens): fewer than ten fit
    assert 3 <= len(ok) < 10 and server.batch.stats["requests"] == len(ok)
    assert all(r.status == "cancelled" and r.error == REASON for r in results if not r.ok)
    assert results.cost <= cap
    assert f"stopped at the cost cap of {money(cap)} after {len(ok)} of 30 prompts" in results.summary()
    again = run(server, PROMPTS[:30], batch=True, max_cost=100 * cap, max_tokens=20)
    assert all(r.ok for r in again) and server.batch.stats["requests"] == 30  # only the rest submitted


@pytest.mark.kernel
def test_one_cap_covers_every_model_of_a_cell_in_a_real_kernel(server):
    cap = 12 * one_cost(server)
    prices = {**PRICES, "gpt-4.1-mini": PRICES["gpt-4o-mini"]}
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        "%load_ext chatmagic",
        f"%config ChatMany.prices = {prices!r}",
        f"%%chatmany -o answers -q -m gpt-4o-mini,gpt-4.1-mini --max-tokens 20 --max-cost {cap!r} "
        f"--base-url {server.base_url}\n" + "\n".join(PROMPTS[:20]),
        "print(sum(v is not None for a in answers for v in a.values()))",
    ]]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    sent = int("".join(o.get("text", "") for o in nb.cells[3].outputs))
    assert 6 <= sent <= 12 and server.stats.requests == sent  # both models' answers under the one cap
    shown = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.output_type == "stream")
    assert f"stopped at the cost cap of {money(cap)}" in shown


def test_a_server_that_sends_no_usage_is_charged_the_worst_case_and_still_runs_concurrently():
    import asyncio

    from aiohttp import web

    async def main():
        seen = {"now": 0, "most": 0, "requests": 0}

        async def handler(request):  # an OpenAI-compatible server whose answers carry no usage
            seen["requests"] += 1
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            try:
                await asyncio.sleep(0.02)  # the server's latency, so requests overlap
                return web.json_response({"model": "gpt-4o-mini", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]})
            finally:
                seen["now"] -= 1
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
            # each answer is charged its worst case: the text's 9 tokens + 16 (nothing learnt), 10 out
            worst = (9 + 16) * 1000 / 1e6 + 10 * 2000 / 1e6
            return await chatmagic.achat_many(PROMPTS[:40], base_url=url, prices=PRICES, max_cost=20.5 * worst,
                                              max_tokens=10, concurrency=8, progress=False, cache=False), seen
        finally:
            await runner.cleanup()
    results, seen = asyncio.run(main())
    sent = sum(r.ok for r in results)
    assert seen["most"] > 1  # the first answer opened the run to its concurrency, usage or not
    assert seen["requests"] == sent == 20 and results.cost is None  # no usage: no figure
    assert "stopped at the cost cap" in results.summary()
