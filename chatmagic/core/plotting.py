"""One picture of a run: requests in flight, latency, answers over time (one row per model).

matplotlib is imported here only, when a figure is drawn. pyplot makes the figure (so that in
a notebook its backend sets up inline display) and lets go of it at once, so the notebook shows
it once: as the value the cell returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from chatmagic.core.timeline import Timeline, backing_off, completed, cooldowns, in_flight, latencies, marks, percentile
from chatmagic.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How each kind of mark is drawn on the in-flight panel: (label, marker, colour).
MARK_STYLE = {
    "429": ("429 rate limited", "x", "#d62728"),
    "5xx": ("5xx server error", "D", "#9467bd"),
    "timeout": ("timeout", "v", "black"),
    "connection": ("connection error", "s", "#8c564b"),
    "error": ("other error", "P", "#e377c2"),
    "cancelled": ("cancelled", "o", "grey"),
    "retry": ("retry sent", "^", "#ff7f0e"),
}
#: What the row's title counts, and how it names them.
HEADLINE = {"retry": "retries", "429": "429s", "5xx": "5xx", "timeout": "timeouts",
            "connection": "connection errors", "error": "other errors", "cancelled": "cancelled"}
ROW_HEIGHT, WIDTH = 4.4, 15.0


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'chatmagic[plot]'") from None
    return plt


def figure(timelines: list[Timeline], title: str | None = None, labels: list[str] | None = None) -> Figure:
    """A matplotlib ``Figure`` with one row of three panels per timeline, all on one time axis
    (so runs compare at a glance); ``labels`` name the rows (default: each timeline's label)."""
    if not timelines:
        raise ConfigError("nothing to plot: no run was recorded")
    plt = _pyplot()
    fig = plt.figure(figsize=(WIDTH, ROW_HEIGHT * len(timelines) + (0.4 if title else 0)), layout="constrained")
    plt.close(fig)  # not shown again at the end of the cell: the caller returns it
    rows = fig.subfigures(len(timelines), 1, squeeze=False)[:, 0]
    end = max(max(tl.span for tl in timelines), 1e-3)
    for row, tl, label in zip(rows, timelines, labels or [tl.label for tl in timelines]):
        _row(row, tl, end, label)
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")
    return cast("Figure", fig)


def headline(tl: Timeline, label: str | None = None) -> str:
    """The row's title: what was sent and what came of it."""
    found = marks(tl)
    ok = len(completed(tl))
    parts = [f"{len(tl)} attempts, {ok} answered"]
    parts += [f"{len(found[k])} {name}" for k, name in HEADLINE.items() if found[k]]
    parts.append(f"{tl.span:.1f} s")
    label = tl.label if label is None else label
    return (f"{label}: " if label else "") + ", ".join(parts)


def _row(fig: Any, tl: Timeline, end: float, label: str) -> None:
    fig.suptitle(headline(tl, label), fontsize=12)
    ax_flight, ax_latency, ax_done = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 1, 1]})
    _in_flight_panel(ax_flight, tl, end)
    _latency_panel(ax_latency, tl)
    _throughput_panel(ax_done, tl, end)


def _in_flight_panel(ax: Any, tl: Timeline, end: float) -> None:
    times, counts = in_flight(tl)
    ax.step(times, counts, where="post", color="#1f77b4", lw=1.5, label="requests in flight")
    ax.fill_between(times, counts, step="post", color="#1f77b4", alpha=0.15)
    top = max(counts)
    if tl.concurrency:
        ax.axhline(tl.concurrency, color="#d62728", ls="--", lw=1.2, label=f"cap (-c {tl.concurrency})")
        top = max(top, tl.concurrency)
    waiting_t, waiting = backing_off(tl)
    if max(waiting) > 0:
        ax.step(waiting_t, waiting, where="post", color="grey", ls=":", lw=1.5, label="waiting in backoff")
        top = max(top, max(waiting))
    for i, (s, e) in enumerate(cooldowns(tl)):
        ax.axvspan(s, e, color="#ff7f0e", alpha=0.12, lw=0, label=None if i else "shared cooldown (after a 429)")
    found = marks(tl)
    if found["cancelled"]:  # the run was interrupted (or cancelled) here
        ax.axvline(max(found["cancelled"]), color="grey", ls="-.", lw=1.2, label="interrupted")
    for kind, at in found.items():
        if at:
            label, marker, colour = MARK_STYLE[kind]
            ax.scatter(at, [_level(times, counts, t) for t in at], marker=marker, color=colour,
                       s=36, zorder=4 if kind == "429" else 3, label=label, linewidths=1.5)
    ax.set(xlim=(0, end * 1.02), ylim=(0, top * 1.15 + 0.5), xlabel="seconds since the run started",
           ylabel="requests in flight", title="Requests in flight")
    if not len(tl):
        ax.text(0.5, 0.5, "nothing sent: every answer came from the cache\n(or from the Batch API)",
                ha="center", va="center", transform=ax.transAxes)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize=8, frameon=False)


def _level(times: list[float], counts: list[int], t: float) -> int:
    """The in-flight count just before ``t`` (so an attempt's end mark sits on its own step)."""
    from bisect import bisect_left
    return counts[max(bisect_left(times, t) - 1, 0)]


def _latency_panel(ax: Any, tl: Timeline) -> None:
    from matplotlib.ticker import MaxNLocator
    values = latencies(tl)
    ax.set(title="Latency of answers", xlabel="seconds per successful attempt", ylabel="attempts")
    if not values:
        ax.text(0.5, 0.5, "no successful attempt", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = min(values), max(values)
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), range=(lo, max(hi, lo + 1e-3)),
            color="#2ca02c", alpha=0.7)
    for q, colour in ((50, "black"), (95, "#d62728")):
        value = percentile(values, q)
        ax.axvline(value, color=colour, ls="--", lw=1.5, label=f"p{q} {value:.2f} s")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.legend(loc="upper right", fontsize=8)


def _throughput_panel(ax: Any, tl: Timeline, end: float) -> None:
    done = completed(tl)
    ax.step([0.0, *done], range(len(done) + 1), where="post", color="#2ca02c", lw=1.8,
            label="answers")
    if tl.rate:
        after = f" after a burst of {tl.burst:.0f}" if tl.burst else ""
        ax.plot([0, end], [tl.burst, tl.burst + tl.rate * end], color="#d62728", ls="--", lw=1.2,
                label=f"rate limit: {tl.rate * 60:.0f}/min{after}")
    rate = len(done) / done[-1] if done and done[-1] > 0 else 0.0
    ax.set(xlim=(0, end * 1.02), ylim=(0, max(len(done), 1) * 1.1), xlabel="seconds since the run started",
           ylabel="answers completed", title=f"Answers over time ({rate:.1f}/s)")
    ax.legend(loc="upper left", fontsize=8)


