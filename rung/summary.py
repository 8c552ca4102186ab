"""Plain-data views of a study's state, for `rung status`, `rung results` and `Broker.results`."""

from __future__ import annotations

from typing import Any

from rung.algorithms import State, TrialStatus
from rung.algorithms.pbt import best_schedule


def trial_rows(state: State, maximise: bool) -> list[dict[str, Any]]:
    """Every trial as a plain row, the best first (trials with no finite metric last)."""
    rows = []
    for trial in state.trials:
        rows.append({
            "trial": trial.id, "status": trial.status.name.lower(), "best": trial.best,
            "budget": trial.budget, "step": trial.history[-1][1] if trial.history else None,
            "attempts": trial.attempt, "config": dict(trial.config), "reason": trial.reason,
            "metrics": dict(trial.history[-1][2]) if trial.history else {},
        })
    ranked = [r for r in rows if r["best"] is not None]
    ranked.sort(key=lambda r: -r["best"] if maximise else r["best"])
    return ranked + [r for r in rows if r["best"] is None]


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
    rows = trial_rows(state, study.mode == "max")
    best = rows[0] if rows and rows[0]["best"] is not None else None
    return {
        "name": study.name, "algorithm": study.algorithm, "metric": study.metric, "mode": study.mode,
        "finished": state.finished, "reason": state.finish_reason,
        "trials": {s.name.lower(): sum(t.status == s for t in state.trials) for s in TrialStatus},
        "brackets": [[[r.budget, len(r)] for r in b.rungs] for b in state.brackets],
        "workers": [[w, t, None if t is None else state.trials[t].attempt]
                    for w, t in sorted(state.workers.items())],
        "best": None if best is None else {"trial": best["trial"], "value": best["best"],
                                           "config": best["config"]},
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"study {summary['name']!r}: {summary['algorithm']}, {summary['metric']} "
             f"({summary['mode']}), "
             f"{'finished: ' + summary['reason'] if summary['finished'] else 'in progress'}"]
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
