"""Chat requests answered by a *base* model as short few-shot completions.

Gemma 3 270M is a base model: fed a chat template it rambles ("The capital of France is
devenue..."), but it completes a pattern well. This proxy sits in front of llama.cpp's server
(in the same child process as it) and turns each chat-completions request into a short Q/A
completion: a few worked examples, the conversation as ``Q:``/``A:`` lines, then ``A:``, with a
stop at the end of the line. The answer goes back in the chat-completions shape, so the client
sees an ordinary OpenAI-compatible server. ``response_format`` (``--json``, ``--schema``) keeps
working: the schema goes to llama.cpp as a grammar, so the answer can only be in shape.

Every other path (``/health``, ``/v1/models``, ``/completion``, ...) is passed to llama.cpp as is.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from chatmagic.transport.limits import read_capped

#: Named in the answer cache's identity of the local server: a new framing is a new server.
FRAMING = "fewshot-v2"
HEADER = "Short, correct answers to questions and one-line tasks."
#: One example of each kind it is good at; none of them is in the measured question set.
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the capital of Italy?", "Rome"),
    ("What is 3 + 4?", "3 + 4 = 7"),
    ('Is this review positive or negative? "The soup was cold and bland."', "negative"),
    ("Is a carrot a fruit or a vegetable?", "vegetable"),
    ("What is the opposite of up?", "down"),
    ("What is 6 - 2?", "6 - 2 = 4"),
    ('Is this review positive or negative? "Works perfectly, very happy with it."', "positive"),
    ("Is a cat an animal or a plant?", "animal"),
    ("How many wheels does a bicycle have?", "2"),
    ("What colour is grass?", "green"),
    ("Translate 'thank you' into French.", "merci"),
)
#: Sampling fields passed to llama.cpp's /completion as they are (same names there).
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
            "frequency_penalty", "repeat_penalty")
MAX_BODY = 8 * 1024 * 1024  # a request or a backend answer: far more than a 2048-token context
BACKEND_TIMEOUT = ClientTimeout(total=600, sock_connect=5)  # the client's own timeout cuts sooner


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, Mapping) and
                        isinstance(p.get("text"), str))
    return ""


def one_line(text: str) -> str:
    """A Q/A line holds one line: a multi-line prompt (a template with a review) is joined."""
    return " ".join(text.split())


def prompt_of(messages: Iterable[Mapping[str, Any]]) -> str:
    """The few-shot completion prompt for a chat: system text first, the examples, the turns."""
    system: list[str] = []
    turns: list[str] = []
    for message in messages:
        role, text = message.get("role"), one_line(text_of(message.get("content")))
        if role in ("system", "developer"):
            system.append(text)
        elif role == "assistant":
            turns.append(f"A: {text}")
        else:
            turns.append(f"Q: {text}")
    examples = [f"Q: {q}\nA: {a}" for q, a in EXAMPLES]
    return "\n".join([HEADER, *system, *examples, *turns, "A:"])


def completion_body(chat: Mapping[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """The llama.cpp ``/completion`` request for one chat-completions request."""
    stops = chat.get("stop") or []
    stops = [stops] if isinstance(stops, str) else [s for s in stops if isinstance(s, str)]
    body: dict[str, Any] = {
        "prompt": prompt_of(m for m in chat.get("messages") or [] if isinstance(m, Mapping)),
        "n_predict": chat.get("max_completion_tokens") or chat.get("max_tokens") or default_max_tokens,
        "temperature": 0.0,  # unless asked otherwise: a base model's best guess is its likeliest
        "cache_prompt": True,  # the examples are the same every time: computed once per slot
    }
    body.update({k: chat[k] for k in SAMPLING if chat.get(k) is not None})
    schema = _schema_of(chat.get("response_format"))
    label = label_field(schema)
    if label is not None:  # a one-label schema: the label alone, as a word of the A: line
        body["grammar"] = 'root ::= " "? (' + " | ".join(json.dumps(v, ensure_ascii=False) for v in label[1]) + ")"
        stops.insert(0, "\n")
    elif schema is not None:
        body["json_schema"] = schema  # a grammar: JSON may span lines, so no newline stop
    else:
        stops.insert(0, "\n")  # the answer is the rest of the A: line
    body["stop"] = stops
    return body


def label_field(schema: Mapping[str, Any] | None) -> tuple[str, list[str]] | None:
    """(name, values) when ``schema`` is an object of one field with an enum of strings (the
    usual classification, ``--schema 'label: a|b|c'``): the base model picks a label far more
    often right as the word after ``A:`` than inside JSON (8 of 8 continents against 5 of 8),
    and the answer is wrapped into the object afterwards."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping) or len(properties) != 1:
        return None
    ((name, spec),) = properties.items()
    values = spec.get("enum") if isinstance(spec, Mapping) else None
    if not values or not all(isinstance(v, str) and v.strip() == v and v for v in values):
        return None
    return str(name), list(values)


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, Mapping):
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    spec = response_format.get("json_schema")
    if response_format.get("type") == "json_schema" and isinstance(spec, Mapping):
        schema = spec.get("schema")
        return dict(schema) if isinstance(schema, Mapping) else {"type": "object"}
    return None


def chat_answer(completion: Mapping[str, Any], model: str, label: str | None = None) -> dict[str, Any]:
    """llama.cpp's ``/completion`` answer in the chat-completions shape; ``label``: the field
    a one-label schema's answer is wrapped in (``{"label": "..."}``)."""
    prompt_tokens = int(completion.get("tokens_evaluated") or 0)
    completion_tokens = int(completion.get("tokens_predicted") or 0)
    text = str(completion.get("content", "")).strip()
    if label is not None:
        text = json.dumps({label: text}, ensure_ascii=False)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "length" if completion.get("stop_type") == "limit" else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def app(backend: str, model: str, default_max_tokens: int) -> web.Application:
    """The proxy: ``/v1/chat/completions`` framed, everything else forwarded to ``backend``."""
    application = web.Application(client_max_size=MAX_BODY)
    sessions: list[ClientSession] = []

    async def session() -> ClientSession:
        if not sessions:  # made on the running loop, once
            sessions.append(ClientSession(connector=TCPConnector(limit=0), timeout=BACKEND_TIMEOUT,
                                          auto_decompress=False))  # read_capped inflates)
        return sessions[0]

    async def chat(request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "expected a JSON object with a list of messages")
        if body.get("stream"):  # not framed: llama.cpp's own chat endpoint streams
            return await forward(request, await request.read())
        client = await session()
        label = label_field(_schema_of(body.get("response_format")))
        async with client.post(f"{backend}/completion", json=completion_body(body, default_max_tokens)) as resp:
            raw = await read_capped(resp, MAX_BODY)
            if resp.status != 200:
                return web.Response(status=resp.status, body=raw, content_type="application/json")
        return web.json_response(chat_answer(json.loads(raw), model, label[0] if label else None))

    async def forward(request: web.Request, data: bytes | None = None) -> web.StreamResponse:
        client = await session()
        data = await request.read() if data is None else data
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with client.request(request.method, f"{backend}{request.rel_url}", data=data, headers=headers) as resp:
            raw = await read_capped(resp, MAX_BODY)
            return web.Response(status=resp.status, body=raw,
                                headers={"Content-Type": resp.headers.get("Content-Type", "application/json")})

    async def close(_: web.Application) -> None:
        for s in sessions:
            await s.close()

    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_post("/chat/completions", chat)
    application.router.add_route("*", "/{tail:.*}", forward)
    application.on_cleanup.append(close)
    return application


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": status}},
                             status=status)


async def serve(backend: str, port: int, host: str, model: str, default_max_tokens: int) -> web.AppRunner:
    """Start the proxy on ``host:port``; it runs on the current loop until the runner is cleaned up."""
    runner = web.AppRunner(app(backend, model, default_max_tokens), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner
