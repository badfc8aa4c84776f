"""Hostile answer *data* from the practice server on 127.0.0.1 (issue 21, rows 6, 7, 9-12, 15):
the key echoed into every field, structured answers nested thousands deep, schemas that loop or
point where nothing can be, field names that collide, lone surrogates."""

import chatmagic
from chatmagic.core.cache import DB_NAME, default_dir

#: A realistic project key: long, and echoed back by ``[[keyfields]]``.
KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 5


def run(server, prompts, **options):
    options.setdefault("api_key", KEY)
    return chatmagic.chat_many(prompts, base_url=server.base_url, progress=False, **options)


def shows_key(text) -> bool:
    """True if any 8 characters of the key's secret part appear in ``text``."""
    secret = KEY[len("sk-proj-"):]
    return any(secret[i:i + 8] in str(text) for i in range(len(secret) - 7))


def cache_bytes() -> bytes:
    """Every byte of the answer cache's files (the database and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in default_dir().glob(DB_NAME + "*"))


# --- row 6: the key echoed into model, finish_reason, the request id, the text -----------------

def test_the_key_echoed_into_every_answer_field_is_never_kept(server):
    prompts = ["tell [[keyfields]]", "fine"]
    first = run(server, prompts)
    echoed = first[0]
    assert echoed.status == "ok" and server.stats.requests == 2
    # the fields did carry the key, now scrubbed: the rest of each field is kept
    assert echoed.model.endswith("-" + "x" * 100 + "***") and echoed.finish_reason == "stop:***"
    assert echoed.text.endswith("(you sent ***)") and echoed.reasoning == "the key was ***"
    assert echoed.request_id.startswith("req_xxx")  # cut to 200 characters after scrubbing, not before
    shown = [echoed.model, echoed.finish_reason, echoed.text, echoed.reasoning, echoed.request_id,
             first.summary(), repr(first), first._repr_html_(), first.to_pandas().to_csv()]
    assert not any(shows_key(s) for s in shown)
    assert "answered by" in first.summary()  # the summary names the (scrubbed) model
    stored = cache_bytes()
    assert b"you sent ***" in stored and not shows_key(stored.decode("utf-8", "replace"))
    again = run(server, prompts)
    assert all(r.cached for r in again) and again.texts() == first.texts()
    assert not shows_key(repr(again)) and again[0].model == echoed.model


def test_the_key_echoed_into_an_anthropic_message_is_scrubbed_before_the_dialect_cuts_a_field():
    from chatmagic.practice.anthropic import FakeAnthropic
    with FakeAnthropic(api_key=KEY) as srv:
        results = chatmagic.chat_many(["tell [[keyfields]]", "fine"], provider="anthropic", model="claude-haiku-4-5",
                                      base_url=srv.base_url, api_key=KEY, progress=False)
    echoed = results[0]
    assert echoed.status == "ok" and echoed.text.endswith("(you sent ***)")
    assert echoed.model.endswith("-" + "x" * 100 + "***")  # its model is kept to 200 characters: scrubbed before that
    assert echoed.request_id.endswith("x***")
    assert not any(shows_key(s) for s in (repr(results), results.to_pandas().to_csv(), echoed.finish_reason,
                                          cache_bytes().decode("utf-8", "replace")))
