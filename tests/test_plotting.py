"""Plotting functions: each draws the numbers of its table (artists checked, not pixels).

The reference for every assertion is the input table itself (hand-made below) or a value
derived by hand from it: a plot is correct when its bars, lines and markers carry exactly
those numbers.
"""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.patches import PathPatch, Rectangle  # noqa: E402

from escalation_sim import plotting as P  # noqa: E402

# the seed trial's doses with a hypothetical truth, time-free (independent of later edits of
# scenarios/relma_cel_sle.yaml)
BASE = """\
name: relma-cel-sle
doses:
  - {label: DL1, amount: 25e6, unit: CAR-T cells}
  - {label: DL2, amount: 50e6, unit: CAR-T cells}
  - {label: DL3, amount: 75e6, unit: CAR-T cells}
  - {label: DL4, amount: 100e6, unit: CAR-T cells}
truth: {p_dlt: [0.05, 0.10, 0.18, 0.28]}
target: 0.25
trial: {max_n: 24, cohort_size: 3, start_dose: 1}
designs:
  - {type: "3+3"}
  - {type: boin}
simulation: {n_trials: 2000, seed: 2026}
"""

DESIGNS = ["3+3", "boin", "crm"]
P_TRUE = [0.05, 0.10, 0.18, 0.28]
# hand-made per-dose summary (design x dose), numbers chosen to be distinct
P_SEL = {"3+3": [0.10, 0.23, 0.33, 0.31], "boin": [0.01, 0.16, 0.41, 0.42],
         "crm": [0.00, 0.07, 0.33, 0.60]}
MEAN_N = {"3+3": [3.7, 4.2, 4.4, 3.6], "boin": [5.0, 6.7, 6.8, 5.5], "crm": [3.8, 5.1, 6.9, 8.2]}
MEAN_Y = {"3+3": [0.2, 0.4, 0.8, 1.0], "boin": [0.3, 0.7, 1.2, 1.5], "crm": [0.2, 0.5, 1.2, 2.3]}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def summary_table():
    rows = []
    for d in DESIGNS:
        for k in range(4):
            rows.append({"scenario": "s", "design": d, "dose": k + 1, "label": f"DL{k + 1}",
                         "p_true": P_TRUE[k], "p_select": P_SEL[d][k], "se_p_select": 0.01,
                         "mean_n": MEAN_N[d][k], "se_mean_n": 0.05, "mean_dlt": MEAN_Y[d][k],
                         "se_mean_dlt": 0.02})
    return pd.DataFrame(rows)


def bars(ax, gid):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == gid]


def lines(ax, gid):
    return [ln for ln in ax.lines if ln.get_gid() == gid]


# -- selection ---------------------------------------------------------------------------------
def test_selection_bars_heights_and_errorbars():
    ax = P.plot_selection(summary_table(), target=0.25, show_none=False)
    b = bars(ax, "selection")
    assert len(b) == 3 * 4                       # one bar per design x dose
    # bars are drawn design by design, dose by dose: heights are the table's p_select
    heights = [r.get_height() for r in b]
    assert heights == pytest.approx(sum((P_SEL[d] for d in DESIGNS), []))
    # one error bar per bar (each design's errorbar LineCollection has 4 segments)
    segs = sum(len(c.get_segments()) for c in ax.collections if isinstance(c, LineCollection))
    assert segs == 12
    # the error bar of the first bar spans p +/- SE
    first = next(c for c in ax.collections if isinstance(c, LineCollection)).get_segments()[0]
    assert sorted(first[:, 1]) == pytest.approx([0.10 - 0.01, 0.10 + 0.01])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["DL1", "DL2", "DL3", "DL4"]


def test_selection_twin_axis_truth_and_target():
    ax = P.plot_selection(summary_table(), target=0.25, show_none=False)
    tw = ax.truth_axis
    assert tw in ax.figure.axes and tw is not ax
    (truth,) = lines(tw, "truth")
    assert list(truth.get_ydata()) == pytest.approx(P_TRUE)
    (target,) = lines(tw, "target")
    assert list(target.get_ydata()) == pytest.approx([0.25, 0.25])


def test_selection_none_group_is_one_minus_sum():
    ax = P.plot_selection(summary_table(), show_none=True, show_truth=False)
    b = bars(ax, "selection")
    assert len(b) == 3 * 5
    # the 5th bar of each design is P(no MTD) = 1 - sum of P(select)
    none = [b[5 * i + 4].get_height() for i in range(3)]
    assert none == pytest.approx([1 - sum(P_SEL[d]) for d in DESIGNS])
    assert ax.get_xticklabels()[-1].get_text() == "no MTD"
    assert not hasattr(ax, "truth_axis")


def test_selection_auto_none_hidden_when_every_trial_selects():
    # crm's row sums to 1.00 exactly; the others do not -> "auto" shows the none group
    t = summary_table()
    t_all = t.copy()
    for d in DESIGNS:
        m = t_all["design"] == d
        t_all.loc[m, "p_select"] = [0.25, 0.25, 0.25, 0.25]
    ax = P.plot_selection(t_all, show_truth=False)
    assert len(bars(ax, "selection")) == 12
    ax = P.plot_selection(t, show_truth=False)
    assert len(bars(ax, "selection")) == 15


def test_selection_from_results_uses_oc_and_passes_ax():
    import escalation_sim as es
    res = es.simulate(es.load_scenario_text(BASE), n_trials=300, seed=5)
    fig, ax0 = plt.subplots()
    ax = P.plot_selection(res, ax=ax0, show_none=True)
    assert ax is ax0
    b = bars(ax, "selection")
    oc = {d.name: res.design_oc(d.name) for d in res.designs}
    expect = sum((oc[d.name]["p_select"] + [oc[d.name]["p_no_mtd"]] for d in res.designs), [])
    assert [r.get_height() for r in b] == pytest.approx(expect)
    # dose amounts from the scenario appear under the labels (25e6 -> 25x10^6)
    assert ax.get_xticklabels()[0].get_text() == "DL1\n25×10⁶"


# -- allocation --------------------------------------------------------------------------------
def test_allocation_patients_and_dlts():
    ax = P.plot_allocation(summary_table())
    n = bars(ax, "patients")
    y = bars(ax, "dlts")
    assert len(n) == 12 and len(y) == 12
    assert [r.get_height() for r in n] == pytest.approx(sum((MEAN_N[d] for d in DESIGNS), []))
    assert [r.get_height() for r in y] == pytest.approx(sum((MEAN_Y[d] for d in DESIGNS), []))
    # DLT bars sit inside their patient bars (same centre)
    for a, b in zip(n, y, strict=True):
        assert a.get_x() + a.get_width() / 2 == pytest.approx(b.get_x() + b.get_width() / 2)
    ax = P.plot_allocation(summary_table(), show_dlt=False)
    assert len(bars(ax, "dlts")) == 0


# -- durations ---------------------------------------------------------------------------------
def durations():
    rng = np.random.default_rng(3)
    return {"3+3": rng.gamma(9.0, 50.0, 400), "boin": rng.gamma(12.0, 50.0, 400)}


def test_durations_box_one_box_per_design_with_median():
    d = durations()
    ax = P.plot_durations(d, kind="box", unit="days")
    boxes = [p for p in ax.patches if isinstance(p, PathPatch) and p.get_gid() == "duration"]
    assert len(boxes) == 2
    # the median line of each box is at the sample median (numpy reference)
    med = [ln for ln in ax.lines if len(ln.get_ydata()) == 2
           and ln.get_ydata()[0] == ln.get_ydata()[1]
           and ln.get_color() == "#222222" and ln.get_marker() in ("None", "", None)]
    meds = sorted(ln.get_ydata()[0] for ln in med)
    assert meds == pytest.approx(sorted(np.median(v) for v in d.values()))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3+3", "boin"]


def test_durations_ecdf_months():
    d = durations()
    ax = P.plot_durations(d, kind="ecdf", unit="months")
    ls = lines(ax, "duration")
    assert len(ls) == 2
    for ln, v in zip(ls, d.values(), strict=True):
        x, y = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())
        assert y[-1] == pytest.approx(1.0) and y[0] == 0.0
        assert x.max() == pytest.approx(v.max() / (365.25 / 12))   # 1 month = 30.4375 days


def test_durations_from_trials_table_and_violin():
    d = durations()
    t = pd.DataFrame({"design": ["a"] * 400 + ["b"] * 400,
                      "duration_days": np.concatenate(list(d.values()))})
    ax = P.plot_durations(t, kind="violin")
    assert len([c for c in ax.collections if c.get_gid() == "duration"]) == 2


def test_durations_without_logistics_raises_clear_error():
    import escalation_sim as es
    res = es.simulate(es.load_scenario_text(BASE), n_trials=50)
    with pytest.raises(ValueError, match="conduct block"):
        P.plot_durations(res)
    with pytest.raises(ValueError, match="kind"):
        P.plot_durations(durations(), kind="pie")


# -- swimmer -----------------------------------------------------------------------------------
def hand_trial():
    """A hand-made 3+3 trial: 3 patients at DL1, then DL2 (one DLT, one drop-out, one
    manufacturing failure)."""
    def pt(pid, dose, arr, inf, dlt=False, dd=np.nan, ev=True, fail=False):
        return dict(patient=pid, dose=dose, arrival_day=arr,
                    leukapheresis_start_day=arr + 14, leukapheresis_end_day=arr + 19,
                    manufacturing_start_day=arr + 19, manufacturing_end_day=arr + 40,
                    lymphodepletion_start_day=np.nan if fail else inf - 5,
                    lymphodepletion_end_day=np.nan if fail else inf - 2,
                    infusion_day=np.nan if fail else inf, dlt=dlt, dlt_day=dd,
                    window_end_day=np.nan if fail else (inf + 28 if ev else inf + 10),
                    evaluable=ev and not fail)
    return pd.DataFrame([pt(1, 1, 0, 50), pt(2, 1, 10, 64), pt(3, 1, 20, 66),
                         pt(4, 2, 60, 100, True, 112), pt(5, 2, 70, 110, ev=False),
                         pt(6, 2, 75, 115, fail=True), pt(7, 2, 80, 120), pt(8, 2, 85, 125)])


def test_swimmer_lanes_phases_windows_and_marks():
    df = hand_trial()
    ax = P.plot_swimmer(df, decisions=[(94, "escalate to DL2"), (153, "stop")],
                        dose_labels=["DL1", "DL2", "DL3"])
    assert len(bars(ax, "phase:leukapheresis")) == 8
    assert len(bars(ax, "phase:manufacturing")) == 8
    assert len(bars(ax, "phase:lymphodepletion")) == 7        # patient 6 never got there
    win = bars(ax, "dlt-window")
    assert len(win) == 7                                     # every infused patient
    assert sum(1 for r in win if r.get_hatch()) == 1         # patient 5 left early
    # window of patient 4 (row 3): infusion day 100 to 128
    r4 = [r for r in win if abs(r.get_y() + r.get_height() / 2 - 3) < 1e-9][0]
    assert (r4.get_x(), r4.get_width()) == pytest.approx((100.0, 28.0))
    (inf,) = lines(ax, "infusion")
    assert len(inf.get_xdata()) == 7
    (dlt,) = lines(ax, "dlt")
    assert list(dlt.get_xdata()) == [112.0] and list(dlt.get_ydata()) == [3.0]
    (never,) = lines(ax, "not-infused")
    assert list(never.get_xdata()) == [115.0]                # end of manufacturing, 75 + 40
    dec = lines(ax, "decision")
    assert sorted(ln.get_xdata()[0] for ln in dec) == [94.0, 153.0]
    assert len(lines(ax, "lane")) == 8
    assert ax.get_yticklabels()[3].get_text() == "4 · DL2"


def test_swimmer_long_phase_table_and_weeks():
    df = hand_trial()[["patient", "dose", "infusion_day", "dlt", "dlt_day", "window_end_day"]]
    phases = pd.DataFrame({"patient": [1, 1, 2], "phase": ["manufacturing", "rest", "rest"],
                           "start_day": [7.0, 40.0, 50.0], "end_day": [35.0, 50.0, 64.0]})
    ax = P.plot_swimmer(df, phases=phases, time_unit="weeks")
    (m,) = bars(ax, "phase:manufacturing")
    assert (m.get_x(), m.get_width()) == pytest.approx((1.0, 4.0))   # days 7-35 = weeks 1-5
    assert len(bars(ax, "phase:rest")) == 2
    with pytest.raises(ValueError, match="missing columns"):
        P.plot_swimmer(df.drop(columns=["infusion_day"]))


def test_swimmer_draws_the_engine_swimmer_table_and_refuses_the_raw_log():
    # a log in the engine's raw form (days after infusion, 0-based patients, one screen
    # failure), converted by the engine; plotting only draws the converted table
    from escalation_sim.engines.calendar import swimmer_table
    log = {"trial": [0, 0, 0], "arrival_index": [0, 1, 2], "arrival_day": [1.0, 5.0, 9.0],
           "screening_end_day": [10.0, 12.0, 20.0], "patient": [0, -1, 1],
           "dose_level": [1, 0, 2], "infusion_day": [40.0, np.nan, 60.0],
           "dlt": [True, False, False], "dlt_day": [6.5, np.nan, np.nan],
           "dropout_day": [np.nan, np.nan, 9.0], "window_end_day": [68.0, np.nan, np.nan],
           "evaluable": [True, False, False]}
    ax = P.plot_swimmer(swimmer_table(log))
    assert len(bars(ax, "phase:screening")) == 2            # arrival 1 -> 10, 9 -> 20
    (dlt,) = lines(ax, "dlt")
    assert list(dlt.get_xdata()) == [46.5]                   # infusion 40 + onset 6.5
    with pytest.raises(ValueError, match="raw patient log.*swimmer_table"):
        P.plot_swimmer(log)


def test_swimmer_data_from_the_discrete_event_engine():
    import escalation_sim as es
    text = BASE + "conduct: {accrual_per_month: 2, dropout_prob: 0.1}\n"
    sc = es.load_scenario_text(text)
    from escalation_sim.engines.calendar import simulate_des_trials
    d = es.swimmer_data(sc, "3+3", trial=3)
    ref = simulate_des_trials(sc.design("3+3").design, sc.p_true, sc.model.conduct,
                              sc.model.simulation.seed, [3])
    pts = d["patients"]
    # the lanes hold the trial's evaluable patients and DLTs per dose (engine's counts)
    ev = pts[pts["evaluable"]]
    n = [int((ev["dose"] == k + 1).sum()) for k in range(4)]
    y = [int(((ev["dose"] == k + 1) & ev["dlt"]).sum()) for k in range(4)]
    assert n == ref["n"][0].tolist() and y == ref["y"][0].tolist()
    assert len(d["decisions"]) == ref["n_decisions"][0]
    assert d["decisions"]["day"].iloc[-1] == pytest.approx(
        ref["first_enrollment_day"][0] + ref["duration_days"][0])
    assert d["decisions"]["label"].iloc[-1].startswith("stop")
    # the dict itself can be drawn: its decisions come along
    ax = P.plot_swimmer(d, dose_labels=sc.dose_labels)
    assert len(lines(ax, "decision")) == len(d["decisions"])
    assert len(lines(ax, "lane")) == len(pts)
    with pytest.raises(ValueError, match="conduct block"):
        es.swimmer_data(es.load_scenario_text(BASE))


def test_plotting_does_not_import_the_engines():
    """Plotting only draws: the swimmer data come from the engine package."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(P))
    targets = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    targets += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [t for t in targets if "engines" in t or "simpy" in t], targets


# -- truth ---------------------------------------------------------------------------------
def test_truth_curve_band_and_mtd():
    ax = P.plot_truth([0.05, 0.12, 0.25, 0.40], target=0.25)
    (truth,) = lines(ax, "truth")
    assert list(truth.get_ydata()) == pytest.approx([0.05, 0.12, 0.25, 0.40])
    (mtd,) = lines(ax, "true-mtd")
    assert list(mtd.get_xdata()) == [2]                      # dose 3 is exactly at 0.25
    # no band unless one is used (issue 18: a band nobody uses misleads)
    assert not [p for p in ax.patches if p.get_gid() == "target-band"]
    ax = P.plot_truth([0.05, 0.12, 0.25, 0.40], target=0.25, band=(0.20, 0.30))
    band = [p for p in ax.patches if p.get_gid() == "target-band"]
    assert len(band) == 1
    ys = band[0].get_path().vertices[:, 1]
    # the band given: target +/- 0.05 (Cheung & Chappell 2002 indifference interval)
    lo, hi = band[0].get_transform().transform([[0, ys.min()], [0, ys.max()]])[:, 1]
    inv = ax.transData.inverted()
    assert inv.transform([[0, lo]])[0, 1] == pytest.approx(0.20)
    assert inv.transform([[0, hi]])[0, 1] == pytest.approx(0.30)
    with pytest.raises(ValueError, match="target"):
        P.plot_truth([0.1, 0.2])


def test_truth_from_scenario_uses_acceptable_band_and_tie_to_lower():
    import escalation_sim as es
    from escalation_sim.inputs.scenario import load_scenario_dict
    raw = dict(es.load_scenario_text(BASE).raw)
    # 0.125 and 0.375 are exact binary fractions: an exact tie around the target 0.25
    raw["truth"] = {"p_dlt": [0.125, 0.375, 0.40, 0.55]}
    raw["oc"] = {"acceptable": [0.125, 0.375]}  # as written in YAML
    sc = load_scenario_dict(raw)
    ax = P.plot_truth(sc)
    (mtd,) = lines(ax, "true-mtd")
    # |0.125 - 0.25| == |0.375 - 0.25|: the tie goes to the lower dose (oc.py definition)
    assert list(mtd.get_xdata()) == [0]
    band = [p for p in ax.patches if p.get_gid() == "target-band"][0]
    assert "0.125-0.375" in band.get_label()


def test_format_amount():
    assert P.format_amount(25e6) == "25×10⁶"
    assert P.format_amount(100e6, "cells") == "100×10⁶ cells"
    assert P.format_amount(2.5e7) == "25×10⁶"
    assert P.format_amount(250) == "250"
    assert P.format_amount(0.5, "mg/kg") == "0.5 mg/kg"
    assert P.format_amount(1.5e-6) == "1.5×10⁻⁶"


def test_selection_panels_put_the_truth_on_its_own_axis():
    import escalation_sim as es
    mc_results_for_panels = es.simulate(es.load_scenario_text(BASE), n_trials=300, seed=5)
    fig = P.plot_selection_panels(mc_results_for_panels)
    top, bottom = fig.axes[:2]
    (truth,) = lines(top, "truth")
    # the truth axis holds the true DLT rates of the scenario, in its own units
    assert list(truth.get_ydata()) == pytest.approx(list(mc_results_for_panels.scenario.p_true))
    assert not hasattr(bottom, "truth_axis") and not lines(bottom, "truth")
    assert len(fig.axes) == 2                                  # no twin axis
