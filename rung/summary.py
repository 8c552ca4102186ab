"""Plain-data views of a study's state, for `rung status`, `rung results` and `Broker.results`."""

from __future__ import annotations

from typing import Any

from rung.algorithms import State, TrialStatus
from rung.algorithms.pbt import best_schedule


def trial_rows(state: State, maximise: bool) -> list[dict[str, Any]]:
    """Every trial as a plain row, the best first: trials with no finite metric after those with one,
    and diverged trials after every other (a finite value before the divergence is no usable model)."""
    rows = []
    for trial in state.trials:
        rows.append({
            "trial": trial.id, "status": trial.status.name.lower(), "best": trial.best,
            "budget": trial.budget, "step": trial.history[-1][1] if trial.history else None,
            "attempts": trial.attempt, "config": dict(trial.config), "reason": trial.reason,
            "metrics": dict(trial.history[-1][2]) if trial.history else {},
        })
    sign = -1 if maximise else 1
    rows.sort(key=lambda r: (r["status"] == "diverged", r["best"] is None,
                             0 if r["best"] is None else sign * r["best"]))
    return rows


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The study's best trial among `trial_rows`: one with a finite metric that did not diverge."""
    best = rows[0] if rows else None
    return best if best is not None and best["best"] is not None and best["status"] != "diverged" else None


def study_failure(state: State, rows: list[dict[str, Any]]) -> str | None:
    """Why a finished study counts as failed, for `rung run` and `rung.tune` to say (and exit non-zero,
    or raise): it stopped at `max_failures`, or it ended without one good trial. The text ends with
    the first failed trial's reason, which carries the end of its log. None for a study that did not
    fail, or has not finished."""
    if not state.finished or (not state.failed and best_row(rows) is not None):
        return None
    why = state.finish_reason if state.failed else "the study ended without one good trial"
    failed = [t for t in state.trials if t.status in (TrialStatus.FAILED, TrialStatus.DIVERGED)]
    if not failed:
        return why
    counts = {status: sum(t.status == status for t in failed)
              for status in (TrialStatus.FAILED, TrialStatus.DIVERGED)}
    first = failed[0]
    told = ", ".join(f"{n} {status.name.lower()}" for status, n in counts.items() if n)
    return f"{why} ({told}); trial {first.id} {first.status.name.lower()}: {first.reason}"


def schedule_rows(state: State, maximise: bool) -> list[dict[str, Any]] | None:
    """How the best member of a population-based study got its weights, oldest first: from which
    step it trained with which hyperparameters, and on whose weights (PBT copies them around). What to
    train a fresh model with to replay the schedule; None for a study that keeps no schedules."""
    schedule = best_schedule(state, maximise)
    if not schedule:
        return None
    return [{"from_step": step, "config": dict(config), "member": member}
            for step, config, member in schedule]


def study_summary(study, state: State) -> dict[str, Any]:
    """What `rung status` shows: trials per status and per rung, workers, the best so far."""
    best = best_row(trial_rows(state, study.mode == "max"))
    return {
        "name": study.name, "algorithm": study.algorithm, "metric": study.metric, "mode": study.mode,
        "finished": state.finished, "failed": state.failed, "reason": state.finish_reason,
        "trials": {s.name.lower(): sum(t.status == s for t in state.trials) for s in TrialStatus},
        "brackets": [[[r.budget, len(r)] for r in b.rungs] for b in state.brackets],
        "workers": [[w, t, None if t is None else state.trials[t].attempt]
                    for w, t in sorted(state.workers.items())],
        "best": None if best is None else {"trial": best["trial"], "value": best["best"],
                                           "config": best["config"]},
    }


def format_summary(summary: dict[str, Any]) -> str:
    ended = "failed" if summary["failed"] else "finished"
    lines = [f"study {summary['name']!r}: {summary['algorithm']}, {summary['metric']} "
             f"({summary['mode']}), "
             f"{ended + ': ' + summary['reason'] if summary['finished'] else 'in progress'}"]
    if summary.get("paused"):  # only a live broker's summary says so
        lines.append(f"paused: {summary['paused']}")
    counts = ", ".join(f"{n} {name}" for name, n in summary["trials"].items() if n)
    lines.append(f"trials: {counts or 'none'}")
    for index, rungs in enumerate(summary["brackets"]):
        sizes = " ".join(f"{n}@{budget:g}" for budget, n in rungs)
        lines.append(f"bracket {index}: rungs (members@budget) {sizes}")
    busy = [w for w in summary["workers"] if w[1] is not None]
    lines.append(f"workers: {len(summary['workers'])} known, {len(busy)} busy")
    lines += [f"  {name}: trial {trial} attempt {attempt}" for name, trial, attempt in busy]
    if summary["best"] is not None:
        best = summary["best"]
        lines.append(f"best {summary['metric']}: {best['value']:.6g} (trial {best['trial']}, "
                     f"{best['config']})")
    return "\n".join(lines)
