"""Swimmer data: one simulated trial of a scenario, ready for
:func:`escalation_sim.plotting.plot_swimmer` (which only draws).

    from escalation_sim import load_scenario, swimmer_data
    from escalation_sim.plotting import plot_swimmer
    sc = load_scenario("scenarios/relma_cel_sle.yaml")
    plot_swimmer(swimmer_data(sc, "boin", trial=0))
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from .log import swimmer_table


def decision_table(decision_days: Sequence[float], patients, dose_labels: Sequence[str],
                   mtd: Optional[int], time_to_event: bool):
    """The dose decisions of one trial as a DataFrame ``(day, label)``.

    ``decision_days``: calendar days of the decisions (the last one is the final decision);
    ``patients``: the trial's swimmer table (its ``cohort`` and ``dose`` columns give the
    dose each decision chose); ``mtd``: 0-based selected dose or None.  Labels: ``next:
    <dose>`` for a classic design's decision that opened a cohort, ``stop: MTD <dose>`` (or
    ``stop: no MTD``) for the last one, empty otherwise (time-to-event designs decide too
    often to label every decision).
    """
    import pandas as pd
    days = np.asarray(decision_days, dtype=float)
    mtd_txt = "no MTD" if mtd is None else f"MTD {dose_labels[mtd]}"
    cohort_dose: Dict[int, int] = {}
    if "cohort" in patients.columns:
        for c, d in zip(patients["cohort"], patients["dose"]):
            if c >= 0 and pd.notna(d):
                cohort_dose.setdefault(int(c), int(d))
    rows = []
    for k, day in enumerate(days):
        if k == len(days) - 1:
            label = f"stop: {mtd_txt}"
        elif not time_to_event and (k + 1) in cohort_dose:
            label = f"next: {dose_labels[cohort_dose[k + 1] - 1]}"
        else:
            label = ""
        rows.append({"day": float(day), "label": label})
    return pd.DataFrame(rows, columns=["day", "label"])


def swimmer_data(scenario, design: Optional[str] = None, trial: int = 0,
                 seed: Optional[int] = None) -> Dict[str, Any]:
    """Simulate one trial of a scenario with a ``conduct`` block, for a swimmer plot.

    Returns ``{"patients": DataFrame (one lane per enrolled patient, see
    :func:`~escalation_sim.engines.calendar.log.swimmer_table`), "decisions": DataFrame(day,
    label), "mtd": 1-based or None, "duration_days": float, "design": name}``.  ``design``:
    a design name of the scenario (default: the first); ``trial`` is the trial index of
    :func:`escalation_sim.simulate` with the same seed (default: the scenario's), so the
    plot shows a trial of that simulation.
    """
    from . import calendar_truth, is_time_to_event, simulate_des_trials
    if not getattr(scenario, "has_logistics", False):
        raise ValueError(f"{getattr(scenario, 'source', 'scenario')}: no conduct block, so "
                         "there is no calendar time to draw; add a conduct block")
    item = scenario.design(design) if design is not None else scenario.designs[0]
    seed = int(seed if seed is not None else scenario.model.simulation.seed)
    res = simulate_des_trials(item.design, calendar_truth(scenario), scenario.model.conduct, seed,
                              [int(trial)], record_patients=True)
    patients = swimmer_table(res["patients"])
    first = float(res["first_enrollment_day"][0])
    days = np.asarray(res["decision_times"][0], dtype=float) + first
    mtd = int(res["mtd"][0])
    decisions = decision_table(days, patients, scenario.dose_labels,
                               None if mtd < 0 else mtd, is_time_to_event(item.design))
    return {"patients": patients, "decisions": decisions,
            "mtd": None if mtd < 0 else mtd + 1, "duration_days": float(res["duration_days"][0]),
            "design": item.name}
