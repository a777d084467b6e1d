"""Cost and resource outputs of the calendar engine (``conduct.costs``).

Per trial, from what the trial recorded (no random number is drawn):

* ``manufacturing_runs``: enrolled patients whose path started a phase of kind
  ``manufacturing`` by the trial's close (a run that failed counts; one not started does not);
* ``vein_to_vein_days``: mean over infused patients of the days from the start of the first
  ``leukapheresis`` phase (enrollment when there is none or it was skipped) to infusion,
  waiting at the gate included (NaN when nobody was infused);
* with ``manufacture_before_slot``: a patient enrolled from the waiting list had its
  leukapheresis and manufacturing started when screened in (``premade`` days before its
  enrollment: its runs and vein-to-vein time start then, and the phases after manufacturing
  start when the product is ready or at enrollment, whichever is later), and every patient who left the
  waiting list or was still on it at the close had a run started too: a wasted run, counted
  in ``manufacturing_runs`` (and ``manufacturing_runs_wasted``); with
  ``manufacturing_capacity`` as well, a run starts when its booking is granted (the days it
  queued, ``path.waits``, shift its phases) and only a granted run of a patient never
  enrolled is wasted (:class:`~.capacity.PremadeCapacityPathway`);
* ``cost_total`` = ``screening`` x patients screened + ``manufacturing`` x runs +
  ``infusion`` x patients infused + ``per_month`` x months from the opening (day 0) to the
  close (the final decision), 1 month = 30.4375 days;
* ``cost_per_evaluable``: ``cost_total`` / evaluable patients (NaN with none).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ...inputs.conduct import DAYS_PER_MONTH
from .patient import FAILED


def cost_columns(setup, res: List) -> Dict[str, np.ndarray]:
    c = setup.conduct
    costs = c.costs
    kinds = [p.kind for p in c.phases]
    manuf = [p for p, k in enumerate(kinds) if k == "manufacturing"]
    leuk = [p for p, k in enumerate(kinds) if k == "leukapheresis"]
    m = len(res)
    runs = np.zeros(m, dtype=np.int64)
    v2v = np.full(m, np.nan)
    total = np.zeros(m)
    per_eval = np.full(m, np.nan)
    premade = c.manufacture_before_slot
    wasted = np.zeros(m, dtype=np.int64)
    for r, t in enumerate(res):
        d = t.draws
        n_runs = 0
        gaps = []
        ahead = t.path.premade if premade else {}
        n_pre = c.premade_phases
        # with manufacturing_capacity too: each run's days queued for its slot
        qwait = getattr(t.path, "waits", {}) if premade else {}
        for pat in t.pats:
            j = pat.j
            waited, credit = ahead.get(j, (0.0, 0.0))
            w = qwait.get(j, 0.0)
            waited -= w
            credit -= w
            days = d.phase_days[j].tolist()
            happens = d.phase_happens[j].tolist()
            f = d.fail_at[j]
            cum = 0.0
            starts = []
            for p in range(len(days)):
                starts.append(cum)
                cum += days[p]
            for p in manuf:
                shift = waited if p < n_pre else credit
                if happens[p] and (f < 0 or p <= f) and (pat.enrolled_day - shift + starts[p]
                                                         <= t.t_end):
                    n_runs += 1
                    break
            if pat.infusion_day >= 0 and pat.status != FAILED:       # infused
                lp = next((p for p in leuk if happens[p]), None)
                first = (pat.enrolled_day if lp is None else pat.enrolled_day + starts[lp]
                         - (waited if lp < n_pre else credit))
                gaps.append(pat.infusion_day - first)
        if premade:              # screened in, waited, never enrolled: a run was started
            if hasattr(t.path, "wasted_runs"):   # with capacity: only runs granted a slot
                wasted[r] = t.path.wasted_runs(t.pats)
            else:
                wasted[r] = t.accrual.n_lost + t.accrual.n_waiting_at_close
            n_runs += int(wasted[r])
        runs[r] = n_runs
        if gaps:
            v2v[r] = sum(gaps) / len(gaps)
        acc = t.accrual
        cost = (costs.screening * acc.n_screened + costs.manufacturing * n_runs
                + costs.infusion * t.n_treated + costs.per_month * t.t_end / DAYS_PER_MONTH)
        total[r] = cost
        n_eval = t.final_state.total_n if t.final_state is not None else 0
        if n_eval > 0:
            per_eval[r] = cost / n_eval
    out = {"manufacturing_runs": runs, "vein_to_vein_days": v2v, "cost_total": total,
           "cost_per_evaluable": per_eval}
    if premade:
        out["manufacturing_runs_wasted"] = wasted
    return out
