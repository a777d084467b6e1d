"""What people read: operating characteristics as percentages with their standard errors.

``run --json`` and the tidy tables (``oc``, ``summary``) keep proportions in [0, 1] under
their names, so that scripts built on them keep working; the terminal table, the report and
the document exports show what the field prints - selection %, % early stop, the percentage
of correct selection - each with its Monte Carlo standard error beside it, in brackets.

:func:`protocol_blocks` builds the standard multi-scenario table of a simulation appendix
(BOIN's ``get.oc`` layout): for each scenario, one row per design and the columns selection %
per dose, mean patients per dose, mean DLTs per dose, % early stop, mean N (and mean
duration when the calendar engine ran).  It reads the tidy tables only, so it serves a single
comparison (``Results.oc()`` / ``summary()``) and a study (``oc.csv`` / ``summary.csv``)
alike.  :func:`render_markdown`, :func:`render_latex`, :func:`render_html` and
:func:`write_docx` (python-docx, the ``docx`` extra) turn the blocks into tables a medical
writer can paste.
"""
from __future__ import annotations

import html as _html
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: float format of the CSV tables: 12 significant digits (no float noise such as
#: 0.30000000000000004, far more precision than any Monte Carlo SE justifies)
CSV_FLOAT_FORMAT = "%.12g"

#: words for the stop reasons (values of :class:`escalation_sim.types.StopReason`)
STOP_LABELS = {
    "max_n_reached": "maximum sample size reached",
    "n_at_dose_reached": "enough patients at the dose (stop_n_at_dose)",
    "lowest_dose_too_toxic": "lowest dose too toxic",
    "rule_complete": "design's rule complete (e.g. 3+3 found its MTD)",
    "all_doses_eliminated": "every dose eliminated as too toxic",
    "no_admissible_dose": "no admissible dose",
    "none": "did not stop",
}

#: every abbreviation used in the tables, explained under them
ABBREVIATIONS = [
    ("Sel %", "percentage of simulated trials that select the dose as the MTD"),
    ("none", "percentage of trials that select no dose (the trial stopped with no MTD)"),
    ("PCS", "percentage of correct selection: trials that select the true MTD (or, with an "
            "acceptable band, any dose in it); when even dose 1 is too toxic, stopping with no "
            "MTD is correct"),
    ("P(over)", "percentage of trials that select an overdose, a dose above the true MTD "
                "(above every acceptable dose)"),
    ("% pts > MTD", "mean patients treated above the true MTD as a percentage of mean "
                    "patients (ratio of means)"),
    ("early stop", "percentage of trials that stop early with no MTD selected (the "
                   "selection percentages and this add up to 100)"),
    ("N", "mean number of patients per trial"),
    ("DLT", "dose-limiting toxicity; DLTs = mean number of DLTs per trial"),
    ("MTD", "maximum tolerated dose: the dose whose true DLT rate is closest to the target"),
    ("SE", "Monte Carlo standard error, in brackets: sqrt(p(1 - p)/R) for a percentage p over "
           "R trials, sd/sqrt(R) for a mean; exact results have none"),
]


def pct(p: Optional[float], se: Optional[float] = None, digits: int = 1) -> str:
    """``0.4165, 0.0110`` -> ``"41.7 (1.1)"``; no "-0.0"; ``None`` -> ``"-"``."""
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "-"
    txt = num(100.0 * p, digits)
    zero = "0." + "0" * digits if digits else "0"
    if txt in (zero, "100" + zero[1:]):  # 0 or 100 to the digits shown: no SE to speak of
        se = None
    if se is not None and math.isfinite(se) and se > 0:
        txt += f" ({num(100.0 * se, digits)})"
    return txt


def num(v: Optional[float], digits: int = 1) -> str:
    """A number with ``digits`` decimals, never printed as "-0.0"."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    txt = f"{v:.{digits}f}"
    if txt.startswith("-") and float(txt) == 0:
        txt = txt[1:]
    return txt


def prop_se(p: float, n_trials: Optional[int], exact: bool) -> float:
    """SE of a proportion over ``n_trials`` trials (0 for exact results)."""
    if exact or not n_trials:
        return 0.0
    return math.sqrt(max(p * (1.0 - p), 0.0) / n_trials)


def stop_reason_columns(oc: Dict[str, Any], n_trials: Optional[int]) -> Dict[str, float]:
    """``stop_<reason>`` and ``se_stop_<reason>`` for every stop reason of one design's OC
    (proportions, as in the other columns of ``oc.csv``)."""
    out: Dict[str, float] = {}
    exact = bool(oc.get("exact"))
    for reason, p in sorted(oc.get("stop_reasons", {}).items()):
        out[f"stop_{reason}"] = float(p)
        out[f"se_stop_{reason}"] = prop_se(float(p), n_trials, exact)
    return out


def cohort_size_notes(scenario, designs: Optional[Sequence[str]] = None) -> List[str]:
    """Notes for the output, the report and ``scenario.resolved.yaml`` when a 3+3 design runs
    in a scenario whose ``trial.cohort_size`` is not 3: the 3+3 always treats cohorts of 3."""
    c = scenario.model.trial.cohort_size
    if c == 3:
        return []
    names = [d.name for d in scenario.designs if d.type == "3+3"
             and (designs is None or d.name in designs)]
    if not names:
        return []
    return [f"design{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)} "
            f"use{'' if len(names) > 1 else 's'} cohorts of 3 (the 3+3 rule); trial.cohort_size "
            f"{c} applies to the other designs"]


def legend(keys: Optional[Sequence[str]] = None) -> List[Tuple[str, str]]:
    """The abbreviations to explain (all, or those named)."""
    if keys is None:
        return list(ABBREVIATIONS)
    return [(k, v) for k, v in ABBREVIATIONS if k in keys]


def legend_text(keys: Optional[Sequence[str]] = None, exact: bool = False) -> str:
    items = [(k, v) for k, v in legend(keys) if not (exact and k == "SE")]
    return "; ".join(f"{k} = {v}" for k, v in items) + "."


# -- the multi-scenario table ---------------------------------------------------------------
@dataclass
class Block:
    """One scenario of the protocol table: a title, grouped columns, one row per design."""

    title: str
    subtitle: str
    groups: List[Tuple[str, int]]          # (group heading, number of columns)
    head: List[str]                        # one heading per column after the design
    rows: List[List[str]]                  # design name first
    anchor: str = ""
    notes: List[str] = field(default_factory=list)


def _mtd_text(true_mtd, labels) -> str:
    if true_mtd is None or (isinstance(true_mtd, float) and true_mtd != true_mtd):
        return "no true MTD (every dose too toxic: stopping is correct)"
    t = int(true_mtd)
    return f"true MTD {labels[t - 1]}"


def protocol_blocks(oc_df, summary_df, compact: bool = False, se: bool = True,
                    titles: Optional[Dict[Any, str]] = None) -> List[Block]:
    """The multi-scenario OC table from the tidy tables (a comparison's or a study's).

    ``oc_df`` one row per (cell x) design, ``summary_df`` one row per (cell x) design x dose;
    a ``cell`` column (studies) groups the rows, else ``scenario`` does.  ``compact``: only
    selection %, early stop and mean N (the columns an appendix needs at a glance).
    ``titles``: a title per group key (e.g. a study cell's label).
    """
    key = "cell" if "cell" in oc_df.columns else "scenario"
    blocks = []
    for gkey in list(dict.fromkeys(oc_df[key].tolist())):
        og = oc_df[oc_df[key] == gkey]
        sg = summary_df[summary_df[key] == gkey]
        first = sg[sg["design"] == og["design"].iloc[0]].sort_values("dose")
        labels = [str(x) for x in first["label"]]
        p_true = [float(x) for x in first["p_true"]]
        K = len(labels)
        exact = str(og["method"].iloc[0]) == "exact"
        show_se = se and not exact
        has_dur = "duration_mean" in og.columns and og["duration_mean"].notna().any()
        tm = og["true_mtd"].iloc[0]
        tm = None if tm is None or (isinstance(tm, float) and tm != tm) else int(tm)
        head = [f"{l}{'*' if tm == k + 1 else ''}" for k, l in enumerate(labels)]
        groups = [("Sel %", K)]
        if not compact:
            head += labels + labels
            groups += [("patients", K), ("DLTs", K)]
        tail = ["PCS", "early stop", "N"]
        if not compact:
            tail.insert(1, "P(over)")
            tail.append("DLTs")
        if has_dur:
            tail.append("months")
        head += tail
        groups.append(("", len(tail)))
        rows = []
        for _, r in og.iterrows():
            d = r["design"]
            ds = sg[sg["design"] == d].sort_values("dose")
            sel = [pct(float(p), float(s) if show_se else None)
                   for p, s in zip(ds["p_select"], ds["se_p_select"])]
            row = [str(d)] + sel
            if not compact:
                row += [num(float(v), 1) for v in ds["mean_n"]]
                row += [num(float(v), 2) for v in ds["mean_dlt"]]
            vals = [pct(float(r["pcs"]), float(r["se_pcs"]) if show_se else None),
                    pct(float(r["p_no_mtd"]), float(r["se_p_no_mtd"]) if show_se else None),
                    num(float(r["mean_n_total"]), 1)]
            if not compact:
                vals.insert(1, pct(float(r["p_select_overdose"])))
                vals.append(num(float(r["mean_dlt_total"]), 2))
            if has_dur:
                m = r.get("duration_mean")
                vals.append("-" if m is None or m != m else num(float(m) / (365.25 / 12), 1))
            rows.append(row + vals)
        scen = str(og["scenario"].iloc[0])
        title = (titles or {}).get(gkey, scen)
        n = og["n_trials"].iloc[0]
        runs = "exact" if exact else f"{int(n):,} trials"
        target = None
        if "target" in og.columns:
            target = og["target"].iloc[0]
        sub = ("true DLT rates " + ", ".join(f"{l} {p:.2f}" for l, p in zip(labels, p_true))
               + (f"; target {float(target):g}" if target is not None and target == target
                  else "") + f"; {_mtd_text(tm, labels)}; {runs}")
        blocks.append(Block(title, sub, groups, head, rows,
                            anchor=f"scenario-{gkey}" if key == "cell" else "scenario-1"))
    return blocks


def block_legend_keys(compact: bool) -> List[str]:
    keys = ["Sel %", "PCS", "early stop", "N", "MTD", "SE"]
    if not compact:
        keys += ["P(over)", "DLT"]
    return keys


def table_note(compact: bool, exact: bool, has_duration: bool = False) -> str:
    txt = ("Percentages of simulated trials, Monte Carlo SE in brackets; patients and DLTs "
           "are means per trial. " if not exact else
           "Exact percentages (every possible trial enumerated); patients and DLTs are "
           "expected numbers per trial. ")
    txt += "* marks the true MTD. "
    if has_duration:
        txt += "months = mean trial duration (first enrollment to final decision). "
    return txt + legend_text(block_legend_keys(compact), exact=exact)


# -- renderers ------------------------------------------------------------------------------
def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(blocks: Sequence[Block], title: str = "", note: str = "") -> str:
    out = [f"# {title}", ""] if title else []
    for b in blocks:
        out += [f"## {b.title}", "", b.subtitle, ""]
        head = ["design"]
        col = 0
        for g, span in b.groups:
            for h in b.head[col:col + span]:
                head.append(f"{g} {h}".strip() if g else h)
            col += span
        out.append("| " + " | ".join(_md_escape(h) for h in head) + " |")
        out.append("|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|")
        for r in b.rows:
            out.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
        out.append("")
    if note:
        out += [note, ""]
    return "\n".join(out)


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(s))


def render_latex(blocks: Sequence[Block], title: str = "", note: str = "") -> str:
    """LaTeX tables (booktabs); ``\\usepackage{booktabs}`` in the preamble."""
    out = [f"% {title}" if title else "% escalation-sim operating characteristics",
           "% needs \\usepackage{booktabs}"]
    for b in blocks:
        ncol = 1 + len(b.head)
        out += [r"\begin{table}[htbp]", r"\centering", r"\footnotesize",
                rf"\caption{{{tex_escape(b.title)}: {tex_escape(b.subtitle)}}}",
                r"\begin{tabular}{l" + "r" * (ncol - 1) + "}", r"\toprule"]
        grp, rules, col = ["design"], [], 2
        for g, span in b.groups:
            grp.append(rf"\multicolumn{{{span}}}{{c}}{{{tex_escape(g)}}}" if g and span > 1
                       else tex_escape(g) if span == 1 else " & ".join([""] * span))
            if g:
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        out.append(" & ".join(grp) + r" \\")
        if rules:
            out.append(" ".join(rules))
        out.append(" & ".join([""] + [tex_escape(h) for h in b.head]) + r" \\")
        out.append(r"\midrule")
        for r in b.rows:
            out.append(" & ".join(tex_escape(c) for c in r) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    if note:
        out.append(r"\noindent{\footnotesize " + tex_escape(note) + "}")
    return "\n".join(out) + "\n"


def render_html(blocks: Sequence[Block], note: str = "", level: int = 3) -> str:
    """HTML tables (class ``oc protocol``), one per block, each with an ``id``."""
    e = lambda s: _html.escape(str(s), quote=True)  # noqa: E731
    out = []
    for b in blocks:
        top = '<th rowspan="2">design</th>' + "".join(
            f'<th colspan="{span}" class="grp">{e(g)}</th>' for g, span in b.groups)
        sub = "".join(f'<th class="num">{e(h)}</th>' for h in b.head)
        body = "".join("<tr><th>" + e(r[0]) + "</th>" +
                       "".join(f'<td class="num">{e(c)}</td>' for c in r[1:]) + "</tr>"
                       for r in b.rows)
        out.append(f'<h{level} id="{e(b.anchor)}">{e(b.title)}</h{level}>'
                   f'<p class="note">{e(b.subtitle)}</p>'
                   f'<div class="wrap"><table class="oc protocol"><thead><tr>{top}</tr>'
                   f"<tr>{sub}</tr></thead><tbody>{body}</tbody></table></div>")
    if note:
        out.append(f'<p class="note">{e(note)}</p>')
    return "".join(out)


def docx_available() -> bool:
    try:
        import docx  # noqa: F401
    except ImportError:
        return False
    return True


def write_docx(blocks: Sequence[Block], path, title: str = "", note: str = "") -> None:
    """The tables as a Word document (python-docx: ``pip install escalation-sim[docx]``);
    written to a temporary file and renamed, never half-written."""
    try:
        import docx
        from docx.shared import Pt
    except ImportError as exc:
        raise ImportError("--format docx needs python-docx: pip install "
                          "'escalation-sim[docx]'") from exc
    from .files import atomic_write
    doc = docx.Document()
    if title:
        doc.add_heading(title, level=1)
    for b in blocks:
        doc.add_heading(b.title, level=2)
        doc.add_paragraph(b.subtitle)
        head = ["design"]
        col = 0
        for g, span in b.groups:
            head += [f"{g} {h}".strip() if g else h for h in b.head[col:col + span]]
            col += span
        t = doc.add_table(rows=1 + len(b.rows), cols=len(head))
        t.style = "Table Grid"
        for j, h in enumerate(head):
            t.cell(0, j).text = h
        for i, r in enumerate(b.rows, start=1):
            for j, c in enumerate(r):
                t.cell(i, j).text = c
        for row in t.rows:
            for c in row.cells:
                for par in c.paragraphs:
                    for run in par.runs:
                        run.font.size = Pt(8)
    if note:
        doc.add_paragraph(note)
    atomic_write(path, lambda f: doc.save(f))
