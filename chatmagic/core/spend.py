"""``--max-cost``: a run that never spends more than the cap, and stops cleanly when the next
request would not fit.

Before each request (each attempt: a retry costs again) ``Spend.reserve`` checks that

    spent (priced from the usage the answers returned) + the reservations of the requests in
    flight + this request's worst case

stays within the cap. The worst case is its input estimate (the text, scaled by the most the
answers' prompt_tokens showed over their text) plus ``max_tokens`` (the most it may answer), or,
without ``max_tokens``, the most output any answer of this run had (then the cap is an estimate,
not a bound: README says so). Until the first answer shows the real counts, one request is in
flight at a time. A request that does not fit waits while others are in flight (their
reservations are worst cases, so their answers usually free room); when nothing is in flight
and it still does not fit, the run stops sending (``stopped``): the requests in flight finish,
the rest are recorded as not sent for the cost cap, and ``note`` is the summary's line.

With ``--batch`` the whole batch's worst case is checked before it is submitted
(``fit_batch``): the prompts that fit, in order, are submitted, the rest are not sent.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chatmagic.core.prices import INSTALL_HINT, Prices, genai_installed, money
from chatmagic.errors import ConfigError

if TYPE_CHECKING:
    from chatmagic.results import Result, Results
    from chatmagic.settings import Settings

#: The reason a record was not sent (its status stays "cancelled": never sent).
REASON = "not sent: cost cap"
#: Before any answer, the input is assumed this many times its text estimate, plus ``PRIOR_EXTRA``
#: tokens (the chat format's own): only the first request is reserved this way.
PRIOR_RATIO = 2.0
PRIOR_EXTRA = 16
#: Output assumed for a request without max_tokens before any answer (the engine's default).
PRIOR_OUTPUT = 256
#: A batch learns nothing before it is submitted: its input is assumed this many times its text
#: estimate (or ``PRIOR_EXTRA`` tokens more, whichever is more).
BATCH_RATIO = 1.25


class Run(Protocol):
    """What the cap reads of a run (``core.engine.Run``, which imports this module)."""

    settings: Settings
    prices: Prices
    results: Results
    spend: Spend | None

    @property
    def head(self) -> dict[str, Any]: ...

    def text_tokens(self, record: Result) -> int: ...


class Capped(Exception):
    """The run stopped at the cost cap: this request is not sent."""


def max_tokens_of(head: dict[str, Any]) -> int | None:
    """The most tokens a request may answer, as its body says (``max_tokens``, or OpenAI's
    ``max_completion_tokens`` given as a param); None when the server decides."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = head.get(name)
        if type(value) is int and value > 0:
            return value
    return None


def check_priced(settings: Settings, prices: Prices) -> None:
    """A cap needs a price: one ConfigError, before anything is sent, when the model has none."""
    if settings.max_cost is None or prices.known(settings.model):
        return
    how = 'set %config ChatMany.prices = {"' + settings.model + '": [input, output]} (dollars per 1M tokens)'
    if not genai_installed():
        how += f", or {INSTALL_HINT}"
    raise ConfigError(f"--max-cost needs a price for model {settings.model!r} and none is known: {how}")


class Hold:
    """One request's reservation under the cap, settled once (later calls do nothing)."""

    __slots__ = ("amount", "done", "spend", "text_tokens")

    def __init__(self, spend: Spend, amount: float, text_tokens: int):
        self.spend, self.amount, self.text_tokens, self.done = spend, amount, text_tokens, False

    def settle(self, answer: Any) -> None:
        """The request is over: ``answer`` came back (None: nothing did)."""
        if not self.done:
            self.done = True
            self.spend.settle(self.amount, answer, self.text_tokens)


class Purse:
    """The money under one cap: one run's, or every model's of a ``-m a,b`` cell (run on one loop)."""

    def __init__(self, cap: float):
        self.cap = cap
        self.spent = 0.0     # dollars, by the usage the answers returned
        self.reserved = 0.0  # the worst cases of the requests in flight
        self.in_flight = 0
        self.wake = asyncio.Event()  # set when a request in flight is over


class Spend:
    """The cap of one run (one model): its worst cases, what it learnt, whether it stopped."""

    def __init__(self, purse: Purse, prices: Prices, model: str, max_tokens: int | None):
        self.purse, self.prices, self.model, self.max_tokens = purse, prices, model, max_tokens
        self.cap = purse.cap
        self.in_flight = 0   # this run's requests in flight
        self.stopped = False
        self._back = 0      # answers that came back (with usage or not): one at a time before the first
        self._answers = 0   # answers whose usage was learnt from
        self._ratio, self._extra = PRIOR_RATIO, float(PRIOR_EXTRA)  # input over its text estimate
        self._output = 0     # the most output an answer had

    @classmethod
    def of(cls, run: Run, purse: Purse | None = None) -> Spend | None:
        """The cap of ``run`` (in ``purse`` when the cap is shared), or None without ``max_cost``
        (its price is checked by ``check_priced``)."""
        cap = run.settings.max_cost
        if cap is None:
            return None
        return cls(purse or Purse(cap), run.prices, run.settings.model, max_tokens_of(run.head))

    def worst(self, text_tokens: int) -> float:
        """The most a request of ``text_tokens`` (its text estimate) can cost, in dollars."""
        prompt = max(text_tokens + self._extra, math.ceil(text_tokens * self._ratio))
        output = self.max_tokens or (self._output if self._answers else PRIOR_OUTPUT)
        bound = self.prices.bound(math.ceil(prompt), output, self.model)
        return math.inf if bound is None else bound

    async def reserve(self, text_tokens: int) -> Hold:
        """Wait until the request fits, and reserve its worst case (``Hold.settle`` gives it
        back); raise ``Capped`` when the cap is reached."""
        purse = self.purse
        while True:
            if self.stopped:
                raise Capped
            need = self.worst(text_tokens)
            fits = purse.spent + purse.reserved + need <= purse.cap
            if fits and (self._back or not self.in_flight):
                purse.reserved += need
                purse.in_flight += 1
                self.in_flight += 1
                return Hold(self, need, text_tokens)
            if not purse.in_flight:  # nothing in flight will free room: the cap is reached
                self.stopped = True
                purse.wake.set()
                raise Capped
            purse.wake.clear()
            await purse.wake.wait()

    def settle(self, held: float, answer: Any, text_tokens: int) -> None:
        """A request reserved with ``held`` is over: ``answer`` (what came back, with its usage;
        None: nothing did, nothing is billed) is charged at its price, or at the worst case when its
        price or usage is unknown."""
        purse = self.purse
        purse.reserved -= held
        purse.in_flight -= 1
        self.in_flight -= 1
        if answer is not None:
            self._back += 1
            cost = self.prices.cost(answer, self.model)
            prompt, output = answer.prompt_tokens, answer.completion_tokens
            if cost is None and isinstance(prompt, int) and isinstance(output, int):
                cost = self.prices.bound(prompt, output, self.model)  # a model of no known price answered
            purse.spent += held if cost is None else cost
            self._learn(text_tokens, prompt, output)
        purse.wake.set()

    def _learn(self, text_tokens: int, prompt: object, output: object) -> None:
        if type(prompt) is not int or type(output) is not int:
            return
        if not self._answers:  # the first real counts replace the prior
            self._ratio, self._extra = 1.0, 0.0
        self._answers += 1
        self._ratio = max(self._ratio, prompt / max(1, text_tokens))
        self._extra = max(self._extra, float(prompt - text_tokens))
        self._output = max(self._output, output)

    def note(self, results: Results) -> str | None:
        """The summary's line when the run stopped at the cap, else None."""
        return stopped_note(self.cap, results) if self.stopped else None


def stopped_note(cap: float, results: Sequence[Result]) -> str | None:
    """"stopped at the cost cap of $5.00 after 812 of 1,000 prompts; ..." when a record was not
    sent for the cap (the records not sent are marked ``REASON`` first)."""
    unsent = sum(r.status == "cancelled" and r.error == REASON for r in results)
    if not unsent:
        return None
    done = len(results) - unsent
    return (f"stopped at the cost cap of {money(cap)} after {done:,} of {len(results):,} prompts; "
            "raise --max-cost and run again to send the rest")


def mark_unsent(records: Iterable[Result]) -> None:
    """Records never sent (status "cancelled", no reason yet) get the cost cap's reason."""
    for record in records:
        if record.status == "cancelled" and record.error is None:
            record.error = REASON


def fit_batch(run: Run, keys: list[str], wanted: dict[str, list[Result]]) -> list[str]:
    """The request keys of a batch, in order, whose worst cases together fit ``max_cost`` (all of
    them without a cap); the records of the rest are not sent, with the cost cap's reason, and the
    summary says so. The output of each request is its ``max_tokens``, else ``PRIOR_OUTPUT``. The
    estimate submitted counts as spent in the run's purse (shared by the models of a cell)."""
    if run.spend is None:
        return keys
    purse, cap = run.spend.purse, run.spend.cap
    output = max_tokens_of(run.head) or PRIOR_OUTPUT
    total, fit = purse.spent, []
    for i, key in enumerate(keys):
        record = wanted[key][0]
        text = run.text_tokens(record)
        prompt = max(text + PRIOR_EXTRA, math.ceil(text * BATCH_RATIO))
        bound = run.prices.bound(prompt, output, run.settings.model)
        total += math.inf if bound is None else bound
        if total > cap:
            for rest in keys[i:]:
                mark_unsent(wanted[rest])
            break
        fit.append(key)
        purse.spent = total
    note = stopped_note(cap, run.results)
    if note:
        run.results.noted(note)
    return fit


def cap_line(cap: float, requests: int, worst: float) -> str:
    """The dry run's line on ``--max-cost``: how many of ``requests`` fit at the ``worst`` estimate of them all."""
    if worst <= cap:
        return f"--max-cost {money(cap)}: every request fits, even at the high estimate"
    fit = int(cap // (worst / requests))
    return (f"--max-cost {money(cap)}: at the high estimate about {fit:,} of {requests:,} requests fit; the run "
            "stops sending there (usually later: answers cost less than their worst case)")
