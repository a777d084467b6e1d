"""Pictures of a graded truth (issue 12 item 6): the stacked grade distribution per dose,
the onset laws by type and the derived DLT curve, in the plots and the report.  The drawn
values must be the truth's own (the plotting functions only draw): references are the
scenario's grade probabilities as written in the file and the gamma CDF from scipy."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

import escalation_sim as es  # noqa: E402
from escalation_sim.inputs.scenario import load_scenario  # noqa: E402
from escalation_sim.plotting import plot_grades, plot_onsets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CART = ROOT / "scenarios" / "cart_crs_icans.yaml"
# scenarios/cart_crs_icans.yaml as written
CRS = {1: [0.30, 0.35, 0.40, 0.40], 2: [0.10, 0.15, 0.20, 0.25], 3: [0.02, 0.04, 0.07, 0.12],
       4: [0.00, 0.01, 0.02, 0.04]}
ICANS = {1: [0.10, 0.15, 0.20, 0.20], 2: [0.04, 0.06, 0.08, 0.10], 3: [0.02, 0.05, 0.11, 0.20],
         4: [0.00, 0.01, 0.04, 0.08]}


def _bars(ax, gid):
    return [p for p in ax.patches if p.get_gid() == gid]


def test_grade_bars_are_the_files_probabilities_stacked():
    sc = load_scenario(CART)
    ax = plot_grades(sc)
    for name, table in (("CRS", CRS), ("ICANS", ICANS)):
        bottom = np.zeros(4)
        for g, probs in table.items():
            bars = _bars(ax, f"grade:{name}:{g}")
            if not any(probs):
                assert not bars
                continue
            heights = [b.get_height() for b in bars]
            np.testing.assert_allclose(heights, probs, atol=1e-12)
            np.testing.assert_allclose([b.get_y() for b in bars], bottom, atol=1e-12)
            bottom += probs


def test_onset_curves_are_the_gamma_laws_of_the_file():
    """CRS gamma mean 3 sd 2 (shape 2.25, scale 4/3); ICANS mean 8 sd 4 (shape 4, scale 2)."""
    sc = load_scenario(CART)
    ax = plot_onsets(sc)
    ref = {"CRS": stats.gamma(2.25, scale=4 / 3), "ICANS": stats.gamma(4.0, scale=2.0)}
    for name, law in ref.items():
        (line,) = [ln for ln in ax.lines if ln.get_gid() == f"onset:{name}"]
        x, y = line.get_data()
        np.testing.assert_allclose(y, law.cdf(x), atol=1e-9)
    (win,) = [ln for ln in ax.lines if ln.get_gid() == "window"]
    assert win.get_xdata()[0] == 28.0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"ICANS: P(onset <= day 28) = {ref['ICANS'].cdf(28):.4f}" in labels


def test_binary_truth_has_no_grades_to_draw():
    sc = load_scenario(ROOT / "scenarios" / "relma_cel_sle.yaml")
    with pytest.raises(ValueError, match="binary"):
        plot_grades(sc)


def test_report_shows_the_graded_truth_only_when_graded():
    from escalation_sim.report import render_report
    sc = load_scenario(CART)
    res = es.simulate(sc, n_trials=20, seed=1, n_jobs=1, logistics=False)
    html = render_report(res, swimmer=False)
    assert "<h3>Graded toxicities</h3>" in html and "CRS grade &ge; 3 or ICANS grade &ge; 3" in html
    binary = es.simulate(load_scenario(ROOT / "scenarios" / "standard_mtd2.yaml"),
                         n_trials=20, seed=1, n_jobs=1)
    assert "Graded toxicities" not in render_report(binary, swimmer=False)


def test_swimmer_marks_each_event_at_its_calendar_onset():
    """swimmer_data of a graded scenario: each type's onset becomes a calendar day
    (infusion + days after infusion, as in the patient log) and is drawn there."""
    from escalation_sim.plotting import plot_swimmer
    sc = load_scenario(CART)
    d = es.swimmer_data(sc, "tite-boin", trial=0)
    log = es.patient_log(sc, "tite-boin", trials=[0])
    log = log[log["patient"] >= 0].sort_values("patient")
    pts = d["patients"]
    for name in ("CRS", "ICANS"):
        np.testing.assert_allclose(pts[f"{name}_onset_day"].to_numpy(),
                                   (log["infusion_day"] + log[f"{name}_onset_day"]).to_numpy())
    ax = plot_swimmer(d)
    (crs,) = [c for c in ax.collections if c.get_gid() == "event:CRS"]
    sel = pts["CRS_grade"].to_numpy() > 0
    np.testing.assert_allclose(np.sort(crs.get_offsets()[:, 0]),
                               np.sort(pts["CRS_onset_day"].to_numpy()[sel]))
