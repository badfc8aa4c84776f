"""The value a %%chatmany cell stores in its variable: a list of answers (one dict per prompt
with several models), or a DataFrame, joined back onto the --over data when it was one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatmagic.errors import ConfigError
from chatmagic.notebook.templates import ITEM, is_frame
from chatmagic.results import add_columns

if TYPE_CHECKING:
    from chatmagic.notebook.cell import Plan
    from chatmagic.results import Results


def value(plan: Plan) -> Any:  # a list, or a pandas DataFrame
    """The list or DataFrame stored in the notebook variable."""
    results = {m: r.results for m, r in plan.runs.items()}
    parsed = plan.json or plan.schema is not None
    answers = {m: (rs.values() if parsed else rs.texts()) for m, rs in results.items()}
    if not plan.as_df:
        if len(results) == 1:
            return next(iter(answers.values()))
        return [dict(zip(answers, row)) for row in zip(*answers.values())]
    return _frame(plan, results, answers)


def _frame(plan: Plan, results: dict[str, Results], answers: dict[str, list[Any]]) -> Any:
    import pandas as pd
    if len(results) == 1:
        frame = next(iter(results.values())).to_pandas()
        if plan.json:
            parsed = [a if isinstance(a, dict) else {} for a in next(iter(answers.values()))]
            frame = add_columns(frame, pd.DataFrame(parsed, index=frame.index))
    else:
        frame = pd.DataFrame({"prompt": plan.prompts})
        for model, rs in results.items():
            frame[f"response_{model}"] = rs.texts() if plan.schema is not None else answers[model]
            frame[f"status_{model}"] = [r.status for r in rs]
            frame[f"error_{model}"] = [r.error for r in rs]
            if plan.schema is not None:
                from chatmagic.core.schema import columns
                typed = columns(plan.schema, answers[model], frame.index)
                frame = add_columns(frame, typed, f"_{model}")  # a field named status, error, ...
    if is_frame(plan.data):
        return join_results(plan.data, frame.drop(columns=["prompt"]))
    frame.index = pd.Index(plan.labels)
    return frame


#: Added to an answer column whose name is already an input column (then _llm2, _llm3, ...).
SUFFIX = "_llm"


def join_results(frame: Any, results_frame: Any) -> Any:
    """A new DataFrame: ``frame`` (same index, same row order, unchanged) with the columns of
    ``results_frame`` appended, matched by position (row i of ``results_frame`` is row i of
    ``frame``; its own index is ignored).

    Input columns keep their names; an answer column whose name is taken gets ``_llm`` appended
    (``_llm2``, ``_llm3``, ... if that is taken too). A Series is joined as a one-column frame named
    after the Series, or "item" if it has no name. Neither argument is modified.
    """
    import pandas as pd

    if isinstance(frame, pd.Series):
        frame = frame.to_frame(ITEM if frame.name is None else frame.name)
    if not isinstance(frame, pd.DataFrame) or not isinstance(results_frame, pd.DataFrame):
        raise ConfigError("join_results needs a DataFrame (or Series) and a DataFrame of answers, got "
                          f"{type(frame).__name__} and {type(results_frame).__name__}")
    if len(frame) != len(results_frame):
        raise ConfigError(f"cannot join {len(results_frame):,} answers onto {len(frame):,} rows")
    taken = {str(c) for c in frame.columns}
    names = []
    for col in results_frame.columns:
        new = str(col)
        if new in taken:
            base, k = new + SUFFIX, 1
            new = base
            while new in taken:
                k += 1
                new = f"{base}{k}"
        taken.add(new)
        names.append(new)
    # by position, as arrays: no index alignment, so a frame with repeated labels joins too
    return frame.assign(**{new: results_frame.iloc[:, i].array for i, new in enumerate(names)})
