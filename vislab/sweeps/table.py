"""runs/<study>/sweep.csv (one row per trial) and sweep.html (the table, the best trial, and Optuna's own
plots of the study, embedded with plotly.js so that the page works offline)."""

from __future__ import annotations

import csv
import io
import warnings

from vislab.files import write_atomically, write_json
from vislab.reports.document import Section, Table, write_html
from vislab.sweeps.space import describe
from vislab.sweeps.study import SURPLUS, WORKER, SweepPlan

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running", "FAIL": "failed"}


def trial_rows(study, plan: SweepPlan) -> tuple[list[str], list[list]]:
    keys = list(plan.space)
    header = ["trial", "state", *keys, plan.metric, "epochs", "worker", "run"]
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(SURPLUS):
            continue
        score = trial.value
        if score is None and trial.intermediate_values:  # a pruned trial: where it stood when stopped
            score = round(trial.intermediate_values[max(trial.intermediate_values)], 6)
        planned = trial.params or trial.system_attrs.get("fixed_params", {})  # a waiting grid point's too
        params = [planned.get(k, "") for k in keys]
        epochs = len(trial.intermediate_values) or ""
        state = STATES.get(trial.state.name, trial.state.name.lower())  # WAITING: "waiting"
        worker, run = trial.user_attrs.get(WORKER, ""), trial.user_attrs.get("run", "")
        rows.append([trial.number, state, *params, "" if score is None else score, epochs, worker, run])
    return header, rows


def write_results(study, plan: SweepPlan) -> None:
    header, rows = trial_rows(study, plan)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_atomically(plan.root / "sweep.csv", text.getvalue())
    best = best_trial(study)
    info = {
        "study": plan.study,
        "storage": plan.storage_label,
        "metric": plan.metric,
        "direction": plan.direction,
        "space": describe(plan.space),
        "trials": plan.trials,
        "done": sum(row[1] in ("complete", "pruned") for row in rows),
        "best": best
        and {
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "run": best.user_attrs.get("run"),
        },  # fmt: skip
    }
    write_json(plan.root / "sweep.json", info)
    write_html(plan.root / "sweep.html", f"sweep {plan.study}", sections(study, info, header, rows))


def shown(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def best_line(info: dict) -> str:
    """The best trial in one line (sweep.json's `info`), as the command, the page and notebooks show it."""
    best = info["best"]
    if not best:
        return "no trial has completed yet"
    return f"best: trial {best['trial']} {shown(best['params'])}: {info['metric']} {best['value']:.4f}"


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no trial has completed yet
        return None


def sections(study, info: dict, header: list[str], rows: list[list]) -> list[Section]:
    goal = "highest" if info["direction"] == "maximize" else "lowest"
    line = best_line(info)
    summary = (
        f"{info['done']} of {info['trials']} trials done; {info['metric']}, {goal} best; storage "
        f"{info['storage']}. {line[0].upper()}{line[1:]}"
        + (f", run {info['best']['run']}" if info["best"] else "")
    )
    found = [Section("trials", "Trials", tables=[Table(header, rows)], note=summary)]
    figures = optuna_figures(study)
    if figures:
        found.append(Section("plots", "Optuna's plots", html=figures))
    return found


def optuna_figures(study) -> str:
    """Optimisation history, parameter importances and parallel coordinates, each where the study has
    enough finished trials for it; plotly.js inlined once."""
    from optuna import visualization

    plots = (
        visualization.plot_optimization_history,
        visualization.plot_param_importances,
        visualization.plot_parallel_coordinate,
    )
    parts = []
    for plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = plot(study)
        except (ValueError, RuntimeError):  # too few finished trials, or a single parameter
            continue
        parts.append(figure.to_html(full_html=False, include_plotlyjs=not parts))
    return "\n".join(parts)
