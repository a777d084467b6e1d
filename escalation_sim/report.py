"""One self-contained HTML page describing a comparison of designs.

``write_report(results, "report.html")`` writes a single file: CSS inline, every plot a
base64-encoded PNG, no scripts and no external URLs, so it can be mailed, archived or opened
offline.  Sections (each an ``id`` so they can be linked to): the scenario, the operating
characteristics with their Monte Carlo standard errors, the per-dose summary, paired
differences between designs, plots, trial durations (scenarios with a ``conduct`` block), the
run settings (seed, number of trials) and the package versions.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import shlex
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

from .designs.rules import describe_rules

__all__ = ["write_report", "render_report", "SECTION_IDS"]

SECTION_IDS = ("scenario", "operating-characteristics", "per-dose-summary",
               "paired-differences", "plots", "durations", "run-settings", "versions")

SECTION_TITLES = {
    "scenario": "Scenario",
    "operating-characteristics": "Operating characteristics",
    "per-dose-summary": "Per-dose summary",
    "paired-differences": "Paired differences",
    "plots": "Plots",
    "durations": "Trial durations",
    "run-settings": "Run settings",
    "versions": "Package versions",
    "real-trial-replay": "Real trial replayed",   # only with a replay (not in SECTION_IDS)
}

# (key, heading, kind) kind: p = probability, pct = percentage of patients, n = mean count
OC_COLUMNS = [
    ("pcs", "P(correct selection)", "p"),
    ("p_no_mtd", "P(no MTD)", "p"),
    ("p_select_overdose", "P(select overdose)", "p"),
    ("mean_n_total", "mean patients", "n"),
    ("mean_dlt_total", "mean DLTs", "n"),
    ("pct_patients_at_mtd", "% patients at MTD", "pct"),
    ("pct_patients_above_mtd", "% patients above MTD", "pct"),
    ("p_over60_above_mtd", "P(&gt;60% above MTD)", "p"),
    ("p_over80_above_mtd", "P(&gt;80% above MTD)", "p"),
]

DES_TOTAL_LABELS = {
    "mean_n_screened": "patients screened",
    "mean_n_screen_failed": "screen failures",
    "mean_n_enrolled": "patients enrolled",
    "mean_n_treated": "patients infused",
    "mean_n_evaluable": "evaluable patients",
    "mean_n_manufacturing_failures": "manufacturing failures",
    "mean_n_phase_failures": "failures before infusion (any phase)",
    "mean_n_dropouts": "drop-outs (not evaluable)",
    "mean_n_lost": "eligible patients lost (waited too long or left)",
    "mean_n_waiting_max": "longest waiting list",
    "mean_n_waiting_at_close": "still waiting at the close",
    "mean_n_decisions": "dose decisions",
    "mean_first_enrollment_day": "day of the first enrollment",
    "mean_time_to_first_decision_days": "days to the first decision",
    "mean_n_escalation": "evaluable escalation patients",
    "mean_y_escalation": "DLTs in escalation patients",
    "mean_n_backfill": "evaluable backfill patients",
    "mean_y_backfill": "DLTs in backfill patients",
    "mean_n_backfill_enrolled": "backfill patients enrolled",
    "mean_n_short": "products below the assigned dose",
    "mean_n_excluded": "patients excluded for a short product",
    "mean_true_rate_selected_nominal": "true DLT rate at the selected dose, as assigned "
                                       "(0 when none selected)",
    "mean_true_rate_selected_as_given": "true DLT rate at the selected dose, as actually "
                                        "given (0 when none selected)",
    "mean_n_not_screened": "arrivals not screened (accrual paused)",
    "mean_manufacturing_runs": "manufacturing runs started",
    "mean_manufacturing_wait_days": "days waited for a manufacturing slot (mean per trial)",
    "mean_manufacturing_queue_max": "longest manufacturing queue",
    "mean_vein_to_vein_days": "days from leukapheresis to infusion (mean per trial)",
    "mean_cost_total": "cost of the trial",
    "mean_cost_per_evaluable": "cost per evaluable patient",
}

PAIRED_LABELS = {
    "correct": "P(correct selection)",
    "select_overdose": "P(select overdose)",
    "n_total": "patients",
    "dlt_total": "DLTs",
    "duration_days": "duration (days)",
}

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d8dee4; --band:#f6f8fa; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: var(--ink); background: #fff; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 64px; }
header h1 { font-size: 1.7em; margin: 0 0 4px; }
header p.lead { color: var(--muted); margin: 0 0 12px; }
nav { border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); padding: 6px 0;
      margin-bottom: 8px; font-size: 0.92em; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
section { margin-top: 30px; }
h2 { font-size: 1.3em; border-bottom: 2px solid var(--ink); padding-bottom: 3px; }
h3 { font-size: 1.05em; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 6px; font-variant-numeric: tabular-nums;
        font-size: 0.93em; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { text-align: left; background: var(--band); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
th.num { text-align: right; }
table.oc tbody th { background: none; font-weight: 500; white-space: nowrap; }
table.oc thead th { text-align: right; }
table.protocol thead th.grp { text-align: center; border-bottom: 1px solid var(--ink); }
table.protocol thead tr:first-child th:first-child { vertical-align: bottom; }
.wrap { overflow-x: auto; }
p.glance { background: #f1f7fc; border-left: 4px solid var(--accent); padding: 8px 12px;
           max-width: 90ch; }
tbody tr:hover { background: #fbfcfd; }
.se { color: var(--muted); font-size: 0.86em; }
.note { color: var(--muted); font-size: 0.9em; max-width: 80ch; }
.kv th { width: 14em; background: none; font-weight: 600; }
.best { font-weight: 700; }
figure { margin: 14px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9em; max-width: 90ch; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
       background: var(--band); padding: 1px 4px; border-radius: 3px; }
.tag { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 0.85em;
       background: #e7f0f8; color: #0b4f80; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
@media print { nav { display: none; } section { break-inside: avoid-page; } }
"""


# -- formatting helpers ---------------------------------------------------------------------
def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Optional[float], kind: str = "p") -> str:
    txt = _fmt_raw(v, kind)
    if txt.startswith("-") and not any(ch in "123456789" for ch in txt):
        txt = txt[1:]  # never "-0.00"
    return txt


def _fmt_raw(v: Optional[float], kind: str = "p") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if kind == "pct":
        return f"{100.0 * v:.1f}%"
    if kind == "n":
        return f"{v:.2f}"
    if kind == "days":
        return f"{v:.0f}"
    if kind == "p":  # probabilities are shown as percentages, as the field prints them
        return f"{100.0 * v:.1f}%"
    return f"{v:.3f}"


def _cell(v, se=None, kind="p", exact=False, cls="") -> str:
    txt = _fmt(v, kind)
    if kind == "p" and txt in ("0.0%", "100.0%"):  # nothing to qualify with an SE
        se = None
    if se is not None and not exact:
        s = _fmt(se, kind)
        txt += f' <span class="se">({s})</span>'
    c = "num" + (f" {cls}" if cls else "")
    return f'<td class="{c}">{txt}</td>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], num_from: int = 1,
           cls: str = "", raw_head: bool = False) -> str:
    ths = "".join(f'<th class="{"num" if i >= num_from else ""}">'
                  f'{h if raw_head else _e(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    c = f' class="{cls}"' if cls else ""
    return (f'<div class="wrap"><table{c}><thead><tr>{ths}</tr></thead><tbody>{body}'
            "</tbody></table></div>")


def _kv(pairs: Sequence[Tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _fig_to_img(fig, alt: str, caption: str = "", dpi: int = 110) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">{cap}'
            f"</figure>")


def _figure(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h))
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _days(x: float) -> str:
    return f"{x:g} day" if x == 1 else f"{x:g} days"


def _duration_text(spec) -> str:
    """``21`` -> "21 days"; ``{mean: 21, sd: 5}`` -> "mean 21 days, sd 5 (gamma)"."""
    if isinstance(spec, (int, float)):
        return _days(float(spec))
    try:
        d = spec.model_dump()
    except AttributeError:  # pragma: no cover
        return _e(spec)
    mean, sd, dist = d.get("mean"), d.get("sd") or 0.0, d.get("dist")
    if not sd or dist == "fixed":
        return _e(_days(mean))
    return _e(f"mean {mean:g} days, sd {sd:g}" + (f" ({dist})" if dist else ""))


# -- sections -------------------------------------------------------------------------------
def _section(sid: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{SECTION_TITLES[sid]}</h2>{body}</section>'


def _target_text(name: str, oc) -> str:
    """``name: dose k (definition)`` of a design's true target dose (graded truths)."""
    tm = oc["true_mtd"]
    where = "none" if tm is None else f"dose {tm}"
    return (f"{_e(name)}: {where} ("
            f"{_e(oc.get('true_target_definition', 'true DLT rate closest to the target'))})")


def _scenario_section(res, figure: bool = True) -> str:
    from .plotting import format_amount, plot_truth
    sc = res.scenario
    m = sc.model
    out = []
    if m.description:
        out.append(f'<p>{_e(m.description)}</p>')
    from .results.oc import true_mtd
    mtd = true_mtd(sc.p_true, sc.target)
    acc = m.oc.acceptable
    rows = []
    for k, d in enumerate(m.doses):
        label = d if isinstance(d, str) else d.label
        amount = "" if isinstance(d, str) or d.amount is None else format_amount(d.amount)
        unit = "" if isinstance(d, str) or d.unit is None else d.unit
        p = float(sc.p_true[k])
        ok = (acc[0] <= p <= acc[1]) if acc is not None else (k == mtd)
        rows.append([f"<td>{k + 1}</td>", f"<td>{_e(label)}</td>",
                     f'<td class="num">{_e(amount)}</td>', f"<td>{_e(unit)}</td>",
                     f'<td class="num{" best" if ok else ""}">{p:.3f}</td>',
                     f"<td>{'true MTD' if k == mtd else ('acceptable' if ok else '')}</td>"])
    out.append("<h3>Doses and true DLT probabilities</h3>")
    out.append(_table(["dose", "label", "amount", "unit", "true P(DLT)", ""], rows, num_from=9))
    settings = [
        ("target DLT rate", f"{sc.target:g}"),
        ("true MTD", f"dose {mtd + 1} ({_e(sc.dose_labels[mtd])}), the dose whose true DLT "
                     "rate is closest to the target"),
        ("correct selection", (f"any dose with {acc[0]:g} &le; P(DLT) &le; {acc[1]:g}"
                               if acc is not None else "the true MTD only")),
        ("maximum sample size", f"{m.trial.max_n} patients"),
        ("cohort size", f"{m.trial.cohort_size}"),
        ("start dose", f"dose {m.trial.start_dose} ({_e(sc.dose_labels[m.trial.start_dose - 1])})"),
        ("source file", f"<code>{_e(sc.source)}</code>"),
    ]
    out.append("<h3>Trial settings</h3>")
    out.append(_kv(settings))
    out.append("<h3>Designs</h3>")
    drows = []
    for item in sc.designs:
        spec = item.spec.model_dump(mode="json", exclude_none=True)
        spec.pop("type", None)
        spec.pop("name", None)
        spec.pop("rules", None)
        opts = ", ".join(f"{k}={v}" for k, v in spec.items()) or "defaults"
        if item.spec.rules:
            opts += "; rules: " + describe_rules(item.spec.rules)
        drows.append([f"<td>{_e(item.name)}</td>", f"<td>{_e(item.type)}</td>",
                      f"<td><code>{_e(opts)}</code></td>"])
    out.append(_table(["name", "type", "options"], drows,
                      num_from=9))
    out.append(_conduct_html(m.conduct))
    if figure:
        fig, (ax,) = _figure(5.6, 3.4)
        plot_truth(sc, ax=ax)
        band = ("shaded: the acceptable band; " if m.oc.acceptable is not None else "")
        out.append(_fig_to_img(fig, "true dose-toxicity curve",
                               "True probability of a DLT at each dose; dashed line: target; "
                               f"{band}ringed: the true MTD."))
    if m.truth.graded:
        out.append(_graded_truth_html(sc))
    return _section("scenario", "".join(out))


def _graded_truth_html(sc) -> str:
    """The graded truth: grade distribution per dose and type, and the onset laws."""
    from .plotting import plot_grades, plot_onsets
    rule = " or ".join(f"{t} grade &ge; {g}" for t, g in sc.outcome_model.rule_names)
    fig, (a1, a2) = _figure(11.0, 3.6, ncols=2)
    plot_grades(sc, ax=a1)
    plot_onsets(sc, ax=a2)
    return ("<h3>Graded toxicities</h3>" + _fig_to_img(
        fig, "graded toxicities: grade distribution per dose and onset by type",
        f"Left: the true distribution of each toxicity type's worst grade per dose (stacked; "
        f"the rest up to 1 is no event).  Right: when each type starts after infusion, and "
        f"the {sc.dlt_window_days:g}-day DLT window.  The DLT curve above is derived exactly "
        f"from them and the DLT rule ({rule}, starting inside the window)."))


def _conduct_html(conduct) -> str:
    if conduct is None:
        return ("<h3>Conduct</h3><p class=\"note\">No <code>conduct</code> block: the trial "
                "is simulated without calendar time (every cohort's outcomes are known "
                "before the next decision), so no durations are reported.</p>")
    c = conduct
    if isinstance(c.accrual_per_month, list):        # a piecewise schedule
        acc = "; ".join((f"{s.rate:g} per month until day {s.until_day:g}"
                         if s.until_day is not None else f"then {s.rate:g} per month")
                        for s in c.accrual_per_month) + " (Poisson), screened before enrollment"
    else:
        acc = ("unlimited (a patient is ready whenever a slot opens)"
               if c.accrual_per_month is None
               else f"{c.accrual_per_month:g} arrival{'' if c.accrual_per_month == 1 else 's'} "
                    "per month (Poisson), screened before enrollment")
    pairs = [
        ("accrual", acc),
        ("screening", f"{_duration_text(c.screening.duration_days)}; "
                      f"{100 * c.screening.failure_prob:.0f}% fail"),
        ("waiting", ("waits as long as needed" if c.max_wait_days is None
                     else f"lost after {_days(c.max_wait_days)}")
         + ("; joins the waiting list while the trial is paused" if c.when_paused == "wait"
            else "; goes elsewhere while the trial is paused")),
        ("DLT window", f"{_days(c.dlt_window_days)} after infusion; onset "
                       + ("uniform within the window" if isinstance(c.dlt_onset, str)
                          else _duration_text(c.dlt_onset))),
        ("drop-out", f"{100 * c.dropout_prob:.1f}% of infused patients (replaced)"),
        ("staggered dosing", _stagger_text(c)),
        ("patients in follow-up", "no cap" if c.max_in_followup is None
         else f"at most {c.max_in_followup}"),
        ("safety review", "none: the decision is taken when a cohort's last window closes"
         if c.review_days == 0 else f"{_days(c.review_days)} after a cohort's last window "
                                    "closes"),
    ]
    bf = getattr(c, "backfill", None)
    if bf is not None:
        pairs.append(("backfill", f"while the escalation cohort is full, an eligible patient "
                      f"is treated at the highest cleared lower dose (at least "
                      f"{bf.min_evaluable} evaluable patients, data below the design's "
                      f"de-escalation boundary); at most {bf.max_per_dose} patients per dose "
                      f"and {bf.max_total} backfill patients in all; their outcomes count in "
                      f"later decisions and in the final selection (BF-BOIN); time-to-event "
                      f"designs backfill while they suspend accrual, a patient being "
                      f"evaluable once its window closed or its DLT was seen; designs on a "
                      f"toxicity score (gBOIN, TITE-gBOIN) clear a dose whose evaluable "
                      f"patients' mean normalized score is below the design's de-escalation "
                      f"boundary and that is not eliminated, a TITE-gBOIN patient being "
                      f"evaluable once its window closed or a scored event was seen"))
    sf = getattr(c, "shortfall", None)
    if sf is not None:
        f = sf.received_fraction
        how = {"assigned": "counted at the assigned dose",
               "received": "counted at the highest dose at or below the amount received",
               "exclude": "not evaluable, and replaced"}[sf.policy]
        pairs.append(("dose received below assigned",
                      f"{100 * sf.prob:.0f}% of products deliver on average "
                      f"{100 * f.mean:.0f}% of the assigned dose (sd {100 * f.sd:.0f}%, "
                      f"{f.dist}) and are infused anyway; the DLT risk (on a graded truth, "
                      f"the grades, hence a score design's score) is that of the amount "
                      f"received; the patient is {how}"))
    mc = getattr(c, "manufacturing_capacity", None)
    if mc is not None:
        hold = (f"each run holds its slot {_days(mc.per_days)}" if mc.per_days is not None
                else "a slot frees when its run ends")
        pairs.append(("manufacturing capacity", f"{mc.slots} run{'s' if mc.slots > 1 else ''} "
                      f"at once; {hold}; patients queue in order"))
    if getattr(c, "manufacture_before_slot", False):
        text = ("leukapheresis and manufacturing start when a patient is screened in; a "
                "patient on the waiting list enters with the product made or under way (a run "
                "started for a patient who never gets a slot is wasted)")
        if mc is not None:
            text += ("; with the capacity above, the run books its manufacturing slot from "
                     "the day it starts: when every slot is booked it waits in the "
                     "manufacturing queue from the day the patient is screened in (first come, "
                     "first served), enrolled or still on the waiting list, and a wasted run "
                     "used its slot all the same")
        pairs.append(("manufacturing before a slot", text))
    co = getattr(c, "costs", None)
    if co is not None:
        pairs.append(("costs", f"{co.screening:,.0f} per patient screened, "
                      f"{co.manufacturing:,.0f} per manufacturing run, {co.infusion:,.0f} per "
                      f"infusion, {co.per_month:,.0f} per month while the trial is open"))
    rows = []
    for p in c.phases:
        rows.append([f"<td>{_e(p.name)}</td>", f"<td>{_e(p.kind)}</td>",
                     f"<td>{_duration_text(p.duration_days)}</td>",
                     f'<td class="num">{100 * p.probability:.0f}%</td>',
                     f'<td class="num">{100 * p.failure_prob:.1f}%</td>'])
    phases = (_table(["phase", "kind", "duration", "happens", "fails"], rows, num_from=3)
              if rows else "<p class=\"note\">no phases between enrollment and infusion</p>")
    return "<h3>Conduct (calendar time)</h3>" + _kv(pairs) + \
        "<h3>From enrollment to infusion</h3>" + phases


def _stagger_text(c) -> str:
    if c.stagger_days == 0:
        return "off"
    group = "each new dose" if c.stagger_scope == "new_dose" else "each cohort"
    if c.stagger_mode == "sentinel":
        return (f"sentinel: the first patient of {group} is observed for "
                f"{_days(c.stagger_days)} before the others are infused")
    return f"infusions of {group} at least {_days(c.stagger_days)} apart"


def _oc_section(res) -> str:
    exact = res.method == "exact"
    ocs = {d.name: res.design_oc(d.name) for d in res.designs}
    names = list(ocs)
    has_dur = any("duration_days" in oc for oc in ocs.values())
    best = max(names, key=lambda n: ocs[n]["pcs"]) if len(names) > 1 else None
    rows = []
    for key, heading, kind in OC_COLUMNS:
        r = [f"<th>{heading}</th>"]
        for name in names:
            oc = ocs[name]
            r.append(_cell(oc[key], oc.get("se_" + key), kind, exact,
                           "best" if key == "pcs" and name == best else ""))
        rows.append(r)
    if has_dur:
        r = ["<th>mean duration (days)</th>"]
        for name in names:
            dd = ocs[name].get("duration_days")
            r.append(_cell(dd["mean"], dd["se_mean"], "days", exact) if dd else "<td></td>")
        rows.append(r)
    true_mtd = next(iter(ocs.values()))["true_mtd"]
    se_note = ("Exact values (enumeration of every possible trial): no simulation error."
               if exact else f"In brackets: Monte Carlo standard errors over "
                             f"{res.n_trials:,} simulated trials.")
    mtd_text = (f"True MTD: dose {true_mtd}." if true_mtd is not None else
                "No true MTD: even dose 1 is too toxic, so stopping is the correct answer "
                "(PCS = P(no MTD)).")
    if any("true_target_definition" in oc for oc in ocs.values()):   # graded truths
        mtd_text = "True target dose (PCS, overdoses) per design: " + "; ".join(
            _target_text(n, oc) for n, oc in ocs.items()) + "."
    note = (f'<p class="note">{se_note} {mtd_text} '
            "Overdose = selecting a dose above the true MTD. % patients at / above the MTD "
            "is the ratio of mean patients there to mean patients in total. "
            "P(&gt;60% above MTD) is the probability that more than 60% of a trial's "
            "patients are treated above the MTD.</p>")
    glance = _at_a_glance(res, ocs, best)
    stops = sorted({k for oc in ocs.values() for k in oc.get("stop_reasons", {})})
    from .results.display import STOP_LABELS
    srows = [[f"<th>{_e(STOP_LABELS.get(k, k.replace('_', ' ')))}</th>"] +
             [_cell(ocs[n].get("stop_reasons", {}).get(k, 0.0),
                    _prop_se(ocs[n].get("stop_reasons", {}).get(k, 0.0), res), "p", exact)
              for n in names]
             for k in stops]
    stop_tbl = ("<h3>Why trials stopped (% of trials, SE in brackets)</h3>" +
                _table([""] + names, srows, cls="oc")) if stops else ""
    return _section("operating-characteristics",
                    glance + _table([""] + names, rows, cls="oc") + note + stop_tbl
                    + _obd_html(res, ocs, exact))


def _obd_html(res, ocs, exact: bool) -> str:
    """The efficacy designs' table (BOIN12, Keyboard phase I/II): the true OBD, P(select
    it), the mean true utility of the selected dose and the mean responders (empty when no
    such design ran)."""
    obd = {n: oc for n, oc in ocs.items() if "selects" in oc}
    if not obd:
        return ""
    labels = res.scenario.dose_labels
    names = list(obd)
    rows = [["<th>true OBD</th>"] + [
        f'<td class="num">{"none" if oc["true_obd"] is None else _e(labels[oc["true_obd"] - 1])}'
        "</td>" for oc in obd.values()]]
    for key, heading, kind in (("p_select_obd", "P(select the true OBD)", "p"),
                               ("mean_utility_selected", "mean true utility of the selected "
                                                         "dose", "x"),
                               ("mean_responders_total", "mean responders per trial", "x")):
        rows.append([f"<th>{_e(heading)}</th>"] + [
            _cell(oc[key], oc.get("se_" + key), kind, exact) for oc in obd.values()])
    first = next(iter(obd.values()))
    rows.append(["<th>true response rate by dose</th>"] + [
        f'<td class="num">{_e(", ".join(f"{q:.2f}" for q in first["p_response"]))}</td>'
        for _ in names])
    rows.append(["<th>true utility by dose</th>"] + [
        f'<td class="num">{_e(", ".join(f"{u:.3g}" + ("" if a else "*") for u, a in zip(oc["true_utility"], oc["true_admissible"])))}</td>'
        for oc in obd.values()])
    defs = " ".join(f"{_e(n)}: the true OBD is {_e(oc['true_obd_definition'])}."
                    for n, oc in obd.items())
    note = ('<p class="note">These designs select the optimal biological dose (OBD) on '
            "toxicity and efficacy: their PCS, overdose and patients-at-the-MTD figures above "
            "refer to their true OBD. * = not admissible on the truth. A trial selecting no "
            "dose counts utility 0. Responders per trial: E[patients at the dose] x "
            f"P(response) (Wald's identity). {defs}</p>")
    return ("<h3>Efficacy designs: optimal biological dose</h3>"
            + _table([""] + names, rows, cls="oc") + note)


def _prop_se(p: float, res) -> Optional[float]:
    from .results.display import prop_se
    return prop_se(p, res.n_trials, res.method == "exact")


def _at_a_glance(res, ocs, best) -> str:
    if best is None:
        return ""
    exact = res.method == "exact"
    oc = ocs[best]
    se = "" if exact else f" (SE {oc['se_pcs']:.3f})"
    what = "a correct dose" if res.scenario.model.oc.acceptable is not None else "the true MTD"
    txt = (f"<b>{_e(best)}</b> selects {what} most often: "
           f"P(correct selection) {oc['pcs']:.3f}{se}")
    others = sorted((n for n in ocs if n != best), key=lambda n: -ocs[n]["pcs"])
    if others:
        second = others[0]
        txt += f", against {ocs[second]['pcs']:.3f} for {_e(second)}"
        if not exact:
            pdf = res.paired()
            for _, r in pdf[pdf["metric"] == "correct"].iterrows():
                if {r["design_a"], r["design_b"]} == {best, second}:
                    diff = r["mean_difference"] * (1 if r["design_a"] == best else -1)
                    d = f"{diff:+.3f}"
                    if not any(ch in "123456789" for ch in d):
                        d = "0.000"
                    txt += (f" (paired difference {d}, SE {r['se']:.3f})")
                    break
    txt += ". "
    txt += _extreme(ocs, "p_select_overdose", "selects an overdose", "{:.3f}", exact)
    txt += _extreme(ocs, "mean_n_total", "treats the fewest patients on average", "{:.1f}",
                    exact)
    return f'<p class="glance">{txt}</p>'


def _extreme(ocs, key, phrase, fmt, exact) -> str:
    """A sentence naming the design(s) with the smallest value of ``key`` (ties named)."""
    vals = {n: oc[key] for n, oc in ocs.items()}
    lo = min(vals.values())
    tol = 1e-12 if exact else 1e-9
    winners = [n for n, v in vals.items() if abs(v - lo) <= tol]
    if len(winners) == len(vals):
        if key == "p_select_overdose" and lo == 0:
            return "No design ever selects an overdose here. "
        return ""
    who = " and ".join(f"<b>{_e(n)}</b>" for n in winners)
    if key == "p_select_overdose":
        return f"Least likely to select an overdose: {who} ({fmt.format(lo)}). "
    return f"{who} {phrase} ({fmt.format(lo)}). "


def _per_dose_section(res) -> str:
    exact = res.method == "exact"
    sm = res.summary()
    labels = res.scenario.dose_labels
    blocks = []
    for metric, title, kind in (("p_select", "P(selected as MTD)", "p"),
                                ("mean_n", "mean patients treated", "n"),
                                ("mean_dlt", "mean DLTs", "n")):
        rows = []
        for name in dict.fromkeys(sm["design"].tolist()):
            sub = sm[sm["design"] == name].sort_values("dose")
            r = [f"<td>{_e(name)}</td>"]
            for v, s in zip(sub[metric], sub["se_" + metric]):
                r.append(_cell(float(v), float(s), kind, exact))
            if metric == "p_select":
                oc = res.design_oc(name)
                r.append(_cell(oc["p_no_mtd"], oc["se_p_no_mtd"], "p", exact))
            rows.append(r)
        head = ["design"] + [f"{l} ({p:.2f})" for l, p in zip(labels, res.scenario.p_true)]
        if metric == "p_select":
            head.append("no MTD")
        blocks.append(f"<h3>{_e(title)}</h3>" + _table(head, rows))
    note = ('<p class="note">Column headings: dose label (true P(DLT)). '
            + ("Exact values." if exact else "In brackets: Monte Carlo standard errors.")
            + "</p>")
    return _section("per-dose-summary", "".join(blocks) + note)


def _paired_section(res) -> str:
    pdf = res.paired()
    if res.method == "exact" or pdf.empty:
        why = ("exact results are computed design by design, so there is no paired sample"
               if res.method == "exact" else "only one design was run")
        return _section("paired-differences", f'<p class="note">No paired differences: {why}.</p>')
    rows = []
    for _, r in pdf.iterrows():
        label = PAIRED_LABELS.get(r["metric"], r["metric"])
        kind = "n" if r["metric"] in ("n_total", "dlt_total") else (
            "days" if r["metric"] == "duration_days" else "p")
        lo, hi = r["mean_difference"] - 1.96 * r["se"], r["mean_difference"] + 1.96 * r["se"]
        clear = r["se"] > 0 and (lo > 0 or hi < 0)
        sign = "+" if r["mean_difference"] > 0 and any(
            ch in "123456789" for ch in _fmt(r["mean_difference"], kind)) else ""
        rows.append([f"<td>{_e(r['design_a'])} − {_e(r['design_b'])}</td>",
                     f"<td>{_e(label)}</td>",
                     f'<td class="num{" best" if clear else ""}">'
                     f'{sign}{_fmt(r["mean_difference"], kind)}</td>',
                     f'<td class="num se">{_fmt(r["se"], kind)}</td>',
                     f'<td class="num">[{_fmt(lo, kind)}, {_fmt(hi, kind)}]</td>'])
    note = ('<p class="note">Every design ran on the same simulated patients (common random '
            "numbers: patient <i>k</i> has the same latent DLT threshold in every design), so "
            "differences are estimated per trial and their standard errors are much smaller "
            "than those of two independent runs. Bold: the 95% interval excludes 0.</p>")
    return _section("paired-differences",
                    _table(["first − second", "metric", "mean difference", "SE", "95% interval"],
                           rows, num_from=2) + note)


def _plots_section(res, allocation: bool = True) -> str:
    from .plotting import plot_allocation
    from .plotting import plot_selection_panels
    fig = plot_selection_panels(res)
    img1 = _fig_to_img(fig, "selection probability per dose by design",
                       "Top: the true probability of a DLT at each dose (the target dashed, "
                       "the true MTD ringed). Bottom: probability that each dose is selected "
                       "as the MTD (bars, with &plusmn;1 SE error bars).")
    if not allocation:
        return _section("plots", img1)
    fig, (ax,) = _figure(8.5, 4.4)
    plot_allocation(res, ax=ax)
    img2 = _fig_to_img(fig, "mean patients and DLTs per dose by design",
                       "Mean number of patients treated (light bars) and of DLTs (dark, "
                       "hatched) at each dose, per trial, &plusmn;1 SE.")
    return _section("plots", img1 + img2)


def _durations_section(res, swimmer: bool) -> str:
    from .plotting import plot_durations
    with_dur = [d for d in res.designs if d.durations is not None]
    if not with_dur:
        return _section("durations",
                        '<p class="note">Not simulated: the scenario has no <code>conduct</code> '
                        "block, so trials run without calendar time. Add one (accrual, "
                        "screening, manufacturing, DLT window ...) to see how long each design "
                        "takes.</p>")
    rows = []
    for d in with_dur:
        oc = res.design_oc(d.name)
        dd = oc["duration_days"]
        r = [f"<td>{_e(d.name)}</td>", _cell(dd["mean"], dd["se_mean"], "days"),
             _cell(dd["median"], None, "days"), _cell(dd["p10"], None, "days"),
             _cell(dd["p90"], None, "days"),
             f'<td class="num">{dd["mean"] / (365.25 / 12):.1f}</td>']
        rows.append(r)
    tbl = _table(["design", "mean days (SE)", "median", "10th pct", "90th pct",
                  "mean months"], rows)
    extra_keys = [k for k in DES_TOTAL_LABELS if any(k in d.des_totals for d in with_dur)]
    extra_keys += sorted({k for d in with_dur for k in d.des_totals} - set(extra_keys))
    extra = ""
    if extra_keys:
        erows = [[f"<th>{_e(DES_TOTAL_LABELS.get(k, k.replace('mean_', '').replace('_', ' ')))}"
                  "</th>"] + [_cell(d.des_totals.get(k), None, "n") for d in with_dur]
                 for k in extra_keys]
        extra = ("<h3>Per trial, on average</h3>" +
                 _table([""] + [d.name for d in with_dur], erows, cls="oc"))
    fig, axes = _figure(10.5, 3.8, ncols=2)
    plot_durations(res, ax=axes[0], kind="box", unit="months")
    plot_durations(res, ax=axes[1], kind="ecdf", unit="months")
    fig.tight_layout()
    img = _fig_to_img(fig, "trial duration by design",
                      "Trial duration from the first enrollment to the final decision. Left: box "
                      "= quartiles, whiskers = 5th-95th percentiles, diamond = mean. Right: "
                      "fraction of trials finished by each month.")
    body = tbl + extra + img
    if swimmer:
        body += _swimmer_html(res)
    return _section("durations", body)


def _swimmer_html(res) -> str:
    """One simulated trial per design as a swimmer plot (from the DES patient log)."""
    from .engines.calendar import swimmer_data
    from .plotting import plot_swimmer
    sc = res.scenario
    if not sc.has_logistics:
        return ""
    parts = ["<h3>One simulated trial</h3>",
             '<p class="note">Trial number 0 of this simulation (the same arrivals and '
             "the same patients' DLT thresholds for every design), one lane per enrolled "
             "patient: coloured bars are the steps before infusion, the triangle the "
             "infusion, the blue bar the DLT window (darker = higher dose; hatched = left "
             "early, replaced), red crosses the DLTs, dotted lines the dose decisions.</p>"]
    for d in res.designs:
        if d.durations is None:
            continue
        ex = swimmer_data(sc, d.name, trial=0, seed=res.seed)
        n = len(ex["patients"])
        fig, (ax,) = _figure(10.0, max(2.8, 0.3 * n + 1.6))
        mtd = "no MTD" if ex["mtd"] is None else f"MTD {sc.dose_labels[ex['mtd'] - 1]}"
        plot_swimmer(ex["patients"], ax=ax, decisions=ex["decisions"],
                     dose_labels=sc.dose_labels,
                     title=f"{d.name}, trial 0: {ex['duration_days']:.0f} days from the first "
                           f"enrollment to the final decision; {mtd}")
        parts.append(_fig_to_img(fig, f"swimmer plot of one simulated trial, {d.name}"))
    return "".join(parts)


def _run_section(res) -> str:
    meta = res.meta
    exact = res.method == "exact"
    pairs = [("method", "exact enumeration" if exact else "Monte Carlo simulation"),
             ("number of trials", "– (exact)" if exact else f"{res.n_trials:,}"),
             ("seed", "– (exact)" if exact else f"{res.seed}")]
    if "engine" in meta:
        pairs.append(("engine", "discrete-event (calendar time)" if meta["engine"] == "des"
                      else "cohort (time-free)"))
    if "elapsed_s" in meta:
        pairs.append(("run time", f"{meta['elapsed_s']:.1f} s"))
    if "n_jobs" in meta:
        pairs.append(("parallel jobs", f"{meta['n_jobs']} ({_e(meta.get('backend', ''))})"))
    src = res.scenario.source
    if not exact and src and not src.startswith("<"):
        cmd = (f"escalation-sim run {shlex.quote(src)} --n-trials {res.n_trials} "
               f"--seed {res.seed}")
        pairs.append(("reproduce with", f"<code>{_e(cmd)}</code>"))
    note = ('<p class="note">Results are identical for any number of jobs, chunk size or '
            "backend: every trial's random numbers depend only on the seed and the trial "
            "index.</p>")
    return _section("run-settings", _kv(pairs) + note)


def _versions_section(res) -> str:
    vers = dict(res.meta.get("versions", {}))
    try:
        import matplotlib
        vers.setdefault("matplotlib", matplotlib.__version__)
    except ImportError:  # pragma: no cover
        pass
    rows = [[f"<td>{_e(k)}</td>", f'<td class="num"><code>{_e(v)}</code></td>']
            for k, v in vers.items()]
    return _section("versions", _table(["package", "version"], rows))


def _protocol_section(res, compact: bool) -> str:
    """The standard per-scenario table (selection %, patients, DLTs, early stop, N)."""
    from .results.display import protocol_blocks, render_html, table_note
    oc = res.oc()
    blocks = protocol_blocks(oc, res.summary(), compact=compact)
    has_dur = "duration_mean" in oc.columns and oc["duration_mean"].notna().any()
    return _section("per-dose-summary", render_html(
        blocks, table_note(compact, res.method == "exact", has_dur)))


def _cohort_html(scenario, designs) -> str:
    from .results.display import cohort_size_notes
    return "".join(f'<p class="glance">Note: {_e(n)}.</p>'
                   for n in cohort_size_notes(scenario, designs))


# -- entry points -----------------------------------------------------------------------------
def _replay_section(rp) -> str:
    """A real trial replayed (:class:`escalation_sim.run.replay.ReplayResult`): the swimmer
    plot of the real patients, then per design its recommendation at each decision point
    beside what the trial did."""
    from .plotting import plot_swimmer
    out = [f'<p>Patient log <code>{_e(rp.source)}</code>: {len(rp.patients)} patients in '
           f'{len(rp.cohorts)} cohorts, data cut-off {_e(rp.as_of)}, '
           f'{_e(_days(rp.window_days))} DLT window.  Designs deciding on complete data are '
           'asked before each cohort (on the complete outcomes so far); time-to-event designs '
           'at each enrollment, on that day\'s data.</p>']
    import pandas as pd
    t0 = pd.Timestamp(rp.patients[0]["enrolled"])
    cuts = []
    for c in rp.cohorts[1:]:
        first = next(q for q in rp.patients if q["patient"] == c[0])
        cuts.append(((pd.Timestamp(first["enrolled"]) - t0).days,
                     rp.dose_labels[first["dose_assigned"] - 1]))
    fig, (ax,) = _figure(9.0, 0.45 * len(rp.patients) + 1.6)
    plot_swimmer(pd.DataFrame(rp.patients), ax=ax, decisions=cuts, dose_labels=rp.dose_labels)
    out.append(_fig_to_img(fig, "swimmer plot of the real trial",
                           "The real trial: one lane per patient (enrollment, infusion, DLT "
                           "window); dotted lines: the start of each new cohort."))
    by_design: dict = {}
    for r in rp.rows:
        by_design.setdefault(r["design"], []).append(r)
    for name, rows in by_design.items():
        n_dev = sum(1 for r in rows if r["deviation"])
        out.append(f"<h3>{_e(name)} <span class=\"se\">({n_dev} deviation"
                   f"{'s' if n_dev != 1 else ''})</span></h3>")
        body = []
        for r in rows:
            rec = r["recommendation"] + (f" x{r['cohort_size']}" if r["cohort_size"] else "")
            body.append([f"<td>{r['point']}</td>", f"<td>{_e(r['date'])}</td>",
                         f"<td>{_e(r['data'])}</td>", f'<td class="num">{r["pending"]}</td>',
                         f"<td>{_e(rec)}</td>", f"<td>{_e(r['trial_action'])}</td>",
                         f"<td>{'<b>' + _e(r['deviation_detail']) + '</b>' if r['deviation'] else ''}</td>",
                         f"<td>{_e(r['reason'])}</td>"])
        data_head = ("score/n per dose" if rows and rows[0].get("outcome") == "score"
                     else "DLT/n per dose")
        out.append(_table(["#", "date", data_head, "pending", "design", "trial",
                           "deviation", "design's reason"], body, num_from=99))
    return _section("real-trial-replay", "".join(out))


def render_report(results, title: Optional[str] = None, swimmer: bool = True,
                  replay=None, compact: bool = False) -> str:
    """The report as one HTML string (see :func:`write_report`).  ``compact``: for an
    appendix - the scenario, the OC table in percentages, the standard per-scenario table and
    one figure (no paired differences, durations detail, swimmer plots or versions)."""
    import matplotlib
    sc = results.scenario
    title = title or f"{sc.name}: comparison of dose-escalation designs"
    designs = ", ".join(d.name for d in results.designs)
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    kind = "exact" if results.method == "exact" else f"{results.n_trials:,} simulated trials"
    # names and labels come from the scenario file: '$' in them is text, not mathtext
    with matplotlib.rc_context({"font.size": 9.5, "axes.spines.top": False,
                                "axes.titlesize": "medium", "text.parse_math": False}):
        if compact:
            ids = ["scenario", "operating-characteristics", "per-dose-summary", "plots",
                   "run-settings"]
            sections = [_scenario_section(results, figure=False), _oc_section(results),
                        _protocol_section(results, compact=True),
                        _plots_section(results, allocation=False), _run_section(results)]
        else:
            ids = list(SECTION_IDS)
            sections = [_scenario_section(results), _oc_section(results),
                        _per_dose_section(results), _paired_section(results),
                        _plots_section(results), _durations_section(results, swimmer),
                        _run_section(results), _versions_section(results)]
        if replay is not None:
            at = len(sections) - (1 if compact else 2)
            sections.insert(at, _replay_section(replay))
            ids.insert(at, "real-trial-replay")
        notes = _cohort_html(results.scenario, [d.name for d in results.designs])
    nav = "".join(f'<a href="#{sid}">{SECTION_TITLES[sid]}</a>' for sid in ids)
    ver = results.meta.get("versions", {}).get("escalation-sim", "")
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
            f"<header><h1>{_e(title)}</h1>"
            f'<p class="lead">{_e(designs)} &middot; target {sc.target:g} &middot; {kind} '
            f'&middot; <span class="tag">{_e(results.method)}</span></p>'
            f"<nav>{nav}</nav></header>" + notes
            + "".join(sections) +
            f"<footer>Generated by escalation-sim {_e(ver)} on {when}.</footer>"
            "</main></body></html>\n")


def write_report(results, path: Union[str, Path] = "report.html", *,
                 title: Optional[str] = None, swimmer: bool = True, replay=None,
                 compact: bool = False) -> Path:
    """Write one self-contained HTML report of ``results`` to ``path``; return the path.

    The page has no scripts and no external references (CSS inline, plots as base64 PNG),
    so it opens offline.  ``swimmer``: also draw one simulated trial per design when the
    scenario has calendar-time logistics.  ``replay``: a real trial replayed
    (:func:`escalation_sim.replay`), shown in its own section.
    """
    from .results.files import atomic_write_text
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(results, title=title, swimmer=swimmer, replay=replay,
                         compact=compact)
    atomic_write_text(path, text)  # never a half-written page
    return path


# -- studies and document formats -------------------------------------------------------------
STUDY_SECTION_IDS = ("study", "oc-table", "selection-figure", "scenario-details",
                     "run-settings")
STUDY_SECTION_TITLES = {"study": "Study", "oc-table": "Operating characteristics by scenario",
                        "selection-figure": "Selection by scenario",
                        "scenario-details": "Scenario details", "run-settings": "Run settings"}
FORMATS = ("html", "md", "tex", "docx")


def _cell_titles(study_results):
    return {int(r["cell"]): str(r["label"]) for _, r in study_results.cells.iterrows()}


def study_blocks(study_results, compact: bool = False):
    """The multi-scenario OC table of a study's results (one block per cell)."""
    from .results.display import protocol_blocks
    return protocol_blocks(study_results.oc, study_results.summary, compact=compact,
                           titles=_cell_titles(study_results))


def _study_note(study_results, compact: bool) -> str:
    from .results.display import table_note
    oc = study_results.oc
    has_dur = "duration_mean" in oc.columns and oc["duration_mean"].notna().any()
    return table_note(compact, False, has_dur)


def render_study_report(study_results, title: Optional[str] = None,
                        compact: bool = False) -> str:
    """A study's appendix as one self-contained HTML page: the multi-scenario OC table,
    the selection-by-scenario figure and each scenario's details behind a link."""
    import matplotlib
    from .plotting import plot_selection_by_scenario
    from .results.display import cohort_size_notes, pct, render_html
    st = study_results.study
    title = title or f"{st.name}: simulation appendix"
    titles = _cell_titles(study_results)
    blocks = study_blocks(study_results, compact=compact)
    meta = study_results.meta
    cells = study_results.cells
    # study section: what was compared, with a link to every scenario
    links = "".join(f'<li><a href="#scenario-{c}">{_e(t)}</a></li>' for c, t in titles.items())
    designs = list(dict.fromkeys(study_results.oc["design"].tolist()))
    pairs = [("description", _e(st.model.description) or "–"),
             ("scenarios", f"{len(cells)}"), ("designs", _e(", ".join(designs))),
             ("source file", f"<code>{_e(st.source)}</code>")]
    notes = sorted({n for c in st.cells for n in cohort_size_notes(c.scenario)})
    study_sec = (_kv(pairs) + "".join(f'<p class="glance">Note: {_e(n)}.</p>' for n in notes)
                 + f"<h3>Scenarios</h3><ol start=\"0\">{links}</ol>")
    with matplotlib.rc_context({"font.size": 9.0, "axes.spines.top": False,
                                "axes.spines.right": False, "text.parse_math": False}):
        fig = plot_selection_by_scenario(study_results.oc, study_results.summary,
                                         titles=titles)
        figure = _fig_to_img(fig, "selection percentage per dose in each scenario",
                             "Percentage of trials selecting each dose (and none), one panel per "
                             "scenario; * and the shaded group mark the true MTD.", dpi=90)
        details = []
        if not compact:
            from .plotting import plot_selection
            for c, t in titles.items():
                og = study_results.oc[study_results.oc["cell"] == c]
                sg = study_results.summary[study_results.summary["cell"] == c]
                rows = []
                for _, r in og.iterrows():
                    rows.append([f"<th>{_e(r['design'])}</th>",
                                 f'<td class="num">{pct(r["pcs"], r["se_pcs"])}</td>',
                                 f'<td class="num">{pct(r["p_select_overdose"], r["se_p_select_overdose"])}</td>',
                                 f'<td class="num">{pct(r["pct_patients_above_mtd"], r["se_pct_patients_above_mtd"])}</td>',
                                 f'<td class="num">{pct(r["p_no_mtd"], r["se_p_no_mtd"])}</td>',
                                 f'<td class="num">{r["mean_n_total"]:.1f}</td>'])
                tbl = _table(["design", "PCS % (SE)", "P(over) % (SE)", "% pts > MTD (SE)",
                              "early stop % (SE)", "N"], rows, cls="oc")
                f2, (ax,) = _figure(6.0, 3.0)
                cols = [c for c in ("design", "dose", "label", "p_true", "p_select",
                                    "se_p_select") if c in sg.columns]
                plot_selection(sg[cols], ax=ax, show_truth=False, show_none=False,
                               legend=True)
                img = _fig_to_img(f2, f"selection by design, {t}", dpi=80)
                block = [b for b in blocks if b.anchor == f"scenario-{c}"]
                details.append(f'<details id="scenario-{c}"><summary>{_e(t)}</summary>'
                               f'<p class="note">{_e(block[0].subtitle if block else "")}</p>'
                               f"{tbl}{img}</details>")
    sections = [("study", study_sec),
                ("oc-table", render_html(blocks, _study_note(study_results, compact))),
                ("selection-figure", figure)]
    if details:
        sections.append(("scenario-details", "".join(details)))
    run = [("trials per scenario", f"{st.n_trials:,}"), ("seed", f"{st.seed} (the same for "
           "every scenario: common random numbers)"),
           ("run time", f"{meta.get('elapsed_s', 0):.1f} s"),
           ("reproduce with", f"<code>{_e(f'escalation-sim study {shlex.quote(st.source)} --out DIR --n-trials {st.n_trials} --seed {st.seed}')}</code>")]
    sections.append(("run-settings", _kv(run)))
    nav = "".join(f'<a href="#{sid}">{STUDY_SECTION_TITLES[sid]}</a>' for sid, _ in sections)
    ver = meta.get("versions", {}).get("escalation-sim", "")
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "".join(f'<section id="{sid}"><h2>{STUDY_SECTION_TITLES[sid]}</h2>{b}</section>'
                   for sid, b in sections)
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
            f"<header><h1>{_e(title)}</h1>"
            f'<p class="lead">{len(cells)} scenarios &middot; {_e(", ".join(designs))} '
            f"&middot; {st.n_trials:,} simulated trials each</p><nav>{nav}</nav></header>"
            + body + f"<footer>Generated by escalation-sim {_e(ver)} on {when}.</footer>"
            "</main></body></html>\n")


def write_tables(blocks, path: Union[str, Path], fmt: str, title: str = "",
                 note: str = "") -> Path:
    """The OC table blocks as Markdown, LaTeX or Word (``fmt`` md / tex / docx)."""
    from .results.display import render_latex, render_markdown, write_docx
    from .results.files import atomic_write_text
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "md":
        atomic_write_text(path, render_markdown(blocks, title, note))
    elif fmt == "tex":
        atomic_write_text(path, render_latex(blocks, title, note))
    elif fmt == "docx":
        write_docx(blocks, path, title, note)
    else:
        raise ValueError(f"unknown table format {fmt!r} (known: md, tex, docx)")
    return path


def write_study_report(study_results, path: Union[str, Path], *, fmt: str = "html",
                       compact: bool = False, title: Optional[str] = None) -> Path:
    """A study's appendix: HTML (:func:`render_study_report`) or the OC table as md/tex/docx."""
    from .results.files import atomic_write_text
    path = Path(path)
    if fmt == "html":
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, render_study_report(study_results, title, compact))
        return path
    st = study_results.study
    return write_tables(study_blocks(study_results, compact), path, fmt,
                        title or f"{st.name}: operating characteristics by scenario",
                        _study_note(study_results, compact))


def write_results_tables(results, path: Union[str, Path], *, fmt: str, compact: bool = False,
                         title: Optional[str] = None) -> Path:
    """One comparison's OC table (and its notes) as md / tex / docx."""
    from .results.display import cohort_size_notes, protocol_blocks, table_note
    oc = results.oc()
    blocks = protocol_blocks(oc, results.summary(), compact=compact)
    has_dur = "duration_mean" in oc.columns and oc["duration_mean"].notna().any()
    note = table_note(compact, results.method == "exact", has_dur)
    for n in cohort_size_notes(results.scenario, [d.name for d in results.designs]):
        note += f" Note: {n}."
    return write_tables(blocks, path, fmt,
                        title or f"{results.scenario.name}: operating characteristics", note)
