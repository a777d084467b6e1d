"""Plots of operating characteristics and simulated trials (matplotlib).

Every function is a free function over the tidy tables of :class:`~escalation_sim.results.tables.Results`
(or over the :class:`Results` itself), takes ``ax=None`` (a new figure is made when it is
``None``) and returns the :class:`matplotlib.axes.Axes` it drew on, so plots compose::

    import matplotlib.pyplot as plt
    from escalation_sim import plotting
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plotting.plot_selection(res, ax=axes[0])
    plotting.plot_allocation(res, ax=axes[1])

Doses are 1-based on every axis (as in the tables).  Designs keep one colour across plots
(the order in which they appear in the table, Okabe-Ito colour-blind-safe palette).

Artists carry a ``gid`` so they can be found again (``"selection"``, ``"patients"``,
``"dlts"``, ``"truth"``, ``"target"``, ``"target-band"``, ``"duration"``, ``"phase:<name>"``,
``"dlt-window"``, ``"infusion"``, ``"dlt"``, ``"not-infused"``, ``"decision"``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["plot_selection", "plot_selection_panels", "plot_selection_by_scenario",
           "plot_allocation", "plot_durations", "plot_swimmer", "plot_truth", "plot_grades",
           "plot_onsets", "design_colors", "dose_tick_labels", "format_amount"]

# Okabe & Ito (2008) colour-blind-safe palette, without black
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
             "#999999"]
PHASE_COLORS = {"screening": "#EEEEEE", "leukapheresis": "#E5D8BD", "manufacturing": "#B2DF8A",
                "bridging": "#FDBF6F", "lymphodepletion": "#CAB2D6", "rest": "#B0B0B0"}
_EXTRA_PHASE_COLORS = ["#FFFF99", "#FB9A99", "#B15928", "#1F78B4", "#33A02C"]
TARGET_COLOR = "#C0392B"


# -- small helpers ---------------------------------------------------------------------------
def _new_ax(ax, figsize=(7.0, 4.0)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt
    _, ax = plt.subplots(figsize=figsize)
    return ax


def _is_results(obj) -> bool:
    return hasattr(obj, "summary") and hasattr(obj, "designs") and hasattr(obj, "scenario")


def _summary(data):
    """The per-dose summary table (design x dose) from a Results or a DataFrame."""
    import pandas as pd
    if _is_results(data):
        return data.summary()
    if isinstance(data, pd.DataFrame):
        need = {"design", "dose"}
        missing = need - set(data.columns)
        if missing:
            raise ValueError(f"need a Results.summary() table; missing columns {sorted(missing)}")
        return data
    raise TypeError(f"expected a Results or a Results.summary() DataFrame (got {type(data)!r})")


def _designs(df) -> List[str]:
    return list(dict.fromkeys(df["design"].tolist()))


def design_colors(names: Sequence[str]) -> Dict[str, str]:
    """One colour per design name, in order (cycling the Okabe-Ito palette)."""
    return {n: OKABE_ITO[i % len(OKABE_ITO)] for i, n in enumerate(names)}


def format_amount(amount: Optional[float], unit: Optional[str] = None) -> str:
    """``25e6`` -> ``"25×10⁶"``; small amounts keep their digits (``"0.5"``, ``"250"``)."""
    if amount is None:
        return ""
    a = float(amount)
    if a == 0 or 1e-3 <= abs(a) < 1e4:
        s = f"{a:g}"
    else:
        exp = int(math.floor(math.log10(abs(a)) / 3.0) * 3)
        mant = a / 10 ** exp
        sup = str(exp).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
        s = f"{mant:g}×10{sup}"
    return f"{s} {unit}" if unit else s


def dose_tick_labels(scenario, with_amount: bool = True) -> List[str]:
    """Labels of the scenario's doses, with the amount on a second line when given."""
    out = []
    for d in scenario.model.doses:
        if isinstance(d, str):
            out.append(d)
        elif with_amount and d.amount is not None:
            out.append(f"{d.label}\n{format_amount(d.amount)}")
        else:
            out.append(d.label)
    return out


def _dose_labels(df, data=None) -> List[str]:
    if data is not None and _is_results(data):
        return dose_tick_labels(data.scenario)
    first = df[df["design"] == df["design"].iloc[0]].sort_values("dose")
    if "label" in first.columns:
        return [str(x) for x in first["label"]]
    return [f"dose {int(d)}" for d in first["dose"]]


def _target_of(data, target):
    if target is not None:
        return float(target)
    if _is_results(data):
        return float(data.scenario.target)
    if hasattr(data, "target") and not callable(data.target):
        return float(data.target)
    return None


def _p_true(df) -> Optional[np.ndarray]:
    if "p_true" not in df.columns:
        return None
    first = df[df["design"] == df["design"].iloc[0]].sort_values("dose")
    return first["p_true"].to_numpy(dtype=float)


def _legend_below(ax, handles, labels, ncol=None):
    if not handles:
        return
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=ncol or min(len(handles), 5), frameon=False, fontsize="small")


def _by_dose(data, ax):
    """What a per-dose bar plot starts from: the summary table, the axes, the designs,
    their colours and the dose labels."""
    df = _summary(data)
    ax = _new_ax(ax)
    designs = _designs(df)
    return df, ax, designs, design_colors(designs), _dose_labels(df, data)


# -- selection ---------------------------------------------------------------------------------
def plot_selection(data, ax=None, *, target: Optional[float] = None, show_truth: bool = True,
                   show_none: Union[bool, str] = "auto", se_mult: float = 1.0,
                   truth_ylim: Optional[Tuple[float, float]] = None,
                   legend: bool = True, title: Optional[str] = None):
    """Probability of selecting each dose as the MTD, by design.

    Grouped bars (one group per dose, one bar per design) with error bars of ``se_mult``
    Monte Carlo standard errors; a last "none" group for P(no MTD) (``show_none``: True,
    False or "auto" = only if some design ever stops without one).  With ``show_truth`` the
    true DLT curve and the target are drawn on a twin y axis (kept as ``ax.truth_axis``;
    ``truth_ylim`` fixes its range, e.g. ``(0, 0.8)`` to compare panels).

    ``data``: a :class:`Results` or its ``summary()`` table (columns design, dose, p_select,
    se_p_select, optionally label and p_true).
    """
    df, ax, designs, colors, labels = _by_dose(data, ax)
    K = len(labels)
    p_none, se_none = {}, {}
    for name in designs:
        sub = df[df["design"] == name]
        p_none[name] = max(0.0, 1.0 - float(sub["p_select"].sum()))
        se_none[name] = 0.0
    if _is_results(data):
        for name in designs:
            oc = data.design_oc(name)
            p_none[name], se_none[name] = oc["p_no_mtd"], oc["se_p_no_mtd"]
    if show_none == "auto":
        show_none = any(v > 5e-4 for v in p_none.values())
    ngroups = K + (1 if show_none else 0)
    width = 0.8 / max(len(designs), 1)
    x = np.arange(ngroups, dtype=float)
    handles, hlabels = [], []
    for i, name in enumerate(designs):
        sub = df[df["design"] == name].sort_values("dose")
        h = sub["p_select"].to_numpy(dtype=float)
        se = sub["se_p_select"].to_numpy(dtype=float) if "se_p_select" in sub else np.zeros(K)
        if show_none:
            h = np.append(h, p_none[name])
            se = np.append(se, se_none[name])
        yerr = se * se_mult if np.any(se > 0) else None
        bars = ax.bar(x - 0.4 + width * (i + 0.5), h, width * 0.92, yerr=yerr,
                      color=colors[name], edgecolor="white", linewidth=0.5,
                      error_kw={"elinewidth": 0.9, "capsize": 2, "ecolor": "#333333"},
                      label=name, gid="selection")
        handles.append(bars)
        hlabels.append(name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels + (["no MTD"] if show_none else []))
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("P(selected as MTD)")
    ax.set_xlim(-0.6, ngroups - 0.4)
    ax.grid(axis="y", color="#E5E5E5", linewidth=0.6)
    ax.set_axisbelow(True)
    p = _p_true(df) if show_truth else None
    tgt = _target_of(data, target) if show_truth else None
    if show_truth and (p is not None or tgt is not None):
        tw = ax.twinx()
        ax.truth_axis = tw
        top = max([*(p.tolist() if p is not None else []), tgt or 0.0])
        if p is not None:
            (ln,) = tw.plot(np.arange(K), p, "-o", color="#222222", markersize=4.5,
                            linewidth=1.4, label="true P(DLT)", gid="truth")
            handles.append(ln)
            hlabels.append("true P(DLT) (right axis)")
        if tgt is not None:
            ln = tw.axhline(tgt, color=TARGET_COLOR, linestyle="--", linewidth=1.1,
                            label=f"target {tgt:g}", gid="target")
            handles.append(ln)
            hlabels.append(f"target {tgt:g}")
        tw.set_ylim(*(truth_ylim or (0, min(1.0, top * 1.35 + 0.02))))
        tw.set_ylabel("true P(DLT)")
    if legend:
        _legend_below(ax, handles, hlabels)
    if title:
        ax.set_title(title)
    return ax


def plot_selection_panels(data, fig=None, *, show_none: Union[bool, str] = "auto",
                          se_mult: float = 1.0):
    """Selection by dose and design with the truth in its own panel above it (the true DLT
    curve, the target and the true MTD on their own axis, aligned dose by dose), rather than
    on a twin axis where the target line seems to sit at a selection probability.  ``data``:
    a :class:`Results`.  Returns the figure; its axes are ``(truth, selection)``."""
    if fig is None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(8.5, 5.6))
    gs = fig.add_gridspec(2, 1, height_ratios=[1, 2.4], hspace=0.35)
    top, ax = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    plot_selection(data, ax=ax, show_none=show_none, show_truth=False, se_mult=se_mult)
    plot_truth(data, ax=top, legend=True)
    top.set_xlim(ax.get_xlim())
    top.set_xticks(ax.get_xticks()[:data.scenario.n_doses])
    top.set_xticklabels([])
    return fig


# -- allocation --------------------------------------------------------------------------------
def plot_allocation(data, ax=None, *, show_dlt: bool = True, se_mult: float = 1.0,
                    legend: bool = True, title: Optional[str] = None):
    """Mean number of patients (light bars) and of DLTs (dark, hatched bars) per dose, by design.

    Error bars: ``se_mult`` Monte Carlo standard errors of the means.
    """
    df, ax, designs, colors, labels = _by_dose(data, ax)
    K = len(labels)
    width = 0.8 / max(len(designs), 1)
    x = np.arange(K, dtype=float)
    handles, hlabels = [], []
    for i, name in enumerate(designs):
        sub = df[df["design"] == name].sort_values("dose")
        pos = x - 0.4 + width * (i + 0.5)
        n = sub["mean_n"].to_numpy(dtype=float)
        se_n = sub["se_mean_n"].to_numpy(dtype=float) if "se_mean_n" in sub else np.zeros(K)
        bars = ax.bar(pos, n, width * 0.92, yerr=se_n * se_mult if np.any(se_n > 0) else None,
                      color=colors[name], alpha=0.45, edgecolor=colors[name], linewidth=0.8,
                      error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#555555"},
                      label=f"{name}: patients", gid="patients")
        handles.append(bars)
        hlabels.append(name)
        if show_dlt:
            y = sub["mean_dlt"].to_numpy(dtype=float)
            se_y = sub["se_mean_dlt"].to_numpy(dtype=float) if "se_mean_dlt" in sub else np.zeros(K)
            ax.bar(pos, y, width * 0.55, yerr=se_y * se_mult if np.any(se_y > 0) else None,
                   color=colors[name], edgecolor="#222222", linewidth=0.5, hatch="///",
                   error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#222222"},
                   label=f"{name}: DLTs", gid="dlts")
    if show_dlt:
        from matplotlib.patches import Patch
        handles += [Patch(facecolor="#BBBBBB", alpha=0.6, edgecolor="#888888"),
                    Patch(facecolor="#666666", edgecolor="#222222", hatch="///")]
        hlabels += ["patients (light)", "DLTs (dark, hatched)"]
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_xlim(-0.6, K - 0.4)
    ax.set_ylabel("mean per trial")
    ax.grid(axis="y", color="#E5E5E5", linewidth=0.6)
    ax.set_axisbelow(True)
    if legend:
        _legend_below(ax, handles, hlabels)
    if title:
        ax.set_title(title)
    return ax


# -- durations ---------------------------------------------------------------------------------
def _durations_by_design(data) -> Dict[str, np.ndarray]:
    import pandas as pd
    if _is_results(data):
        out = {d.name: np.asarray(d.durations, dtype=float) for d in data.designs
               if d.durations is not None}
    elif isinstance(data, pd.DataFrame):
        if not {"design", "duration_days"} <= set(data.columns):
            raise ValueError("need columns 'design' and 'duration_days' (Results.trials())")
        out = {name: data.loc[data["design"] == name, "duration_days"].to_numpy(dtype=float)
               for name in dict.fromkeys(data["design"].tolist())}
    elif isinstance(data, Mapping):
        out = {str(k): np.asarray(v, dtype=float) for k, v in data.items()}
    else:
        raise TypeError("expected a Results, a trials DataFrame or a mapping design -> days "
                        f"(got {type(data)!r})")
    out = {k: v[np.isfinite(v)] for k, v in out.items()}
    if not out or all(v.size == 0 for v in out.values()):
        raise ValueError("no trial durations: simulate a scenario with a conduct block "
                         "(calendar-time logistics) to get them")
    return out


def plot_durations(data, ax=None, *, kind: str = "box", unit: str = "months",
                   legend: bool = True, title: Optional[str] = None):
    """Distribution of trial duration (first arrival to the last decision), by design.

    ``kind``: ``"box"`` (box = quartiles, whiskers = 5th-95th percentiles, diamond = mean),
    ``"violin"`` or ``"ecdf"`` (one step curve per design).  ``unit``: ``"days"`` or
    ``"months"`` (30.4375 days).  ``data``: a :class:`Results` from a scenario with a
    ``conduct`` block, a ``Results.trials()`` table, or a mapping design -> durations in days.
    """
    if kind not in ("box", "violin", "ecdf"):
        raise ValueError(f"kind must be 'box', 'violin' or 'ecdf' (got {kind!r})")
    if unit not in ("days", "months"):
        raise ValueError(f"unit must be 'days' or 'months' (got {unit!r})")
    durs = _durations_by_design(data)
    scale = 1.0 if unit == "days" else 365.25 / 12.0
    names = list(durs)
    vals = [durs[n] / scale for n in names]
    colors = design_colors(names)
    ax = _new_ax(ax)
    if kind == "ecdf":
        for name, v in zip(names, vals):
            v = np.sort(v)
            yv = np.arange(1, v.size + 1) / v.size
            ax.step(np.concatenate([[v[0]], v]), np.concatenate([[0.0], yv]), where="post",
                    color=colors[name], linewidth=1.5, label=name, gid="duration")
        ax.set_xlabel(f"trial duration ({unit})")
        ax.set_ylabel("fraction of trials finished")
        ax.set_ylim(0, 1.02)
        ax.grid(color="#E5E5E5", linewidth=0.6)
        if legend:
            ax.legend(frameon=False, fontsize="small", loc="lower right")
    else:
        if kind == "box":
            bp = ax.boxplot(vals, whis=(5, 95), showmeans=True, showfliers=False,
                            patch_artist=True, widths=0.55,
                            meanprops={"marker": "D", "markerfacecolor": "white",
                                       "markeredgecolor": "#222222", "markersize": 5},
                            medianprops={"color": "#222222"})
            patches, alpha = bp["boxes"], 0.75
        else:
            vp = ax.violinplot(vals, showmeans=True, showextrema=False)
            patches, alpha = vp["bodies"], 0.7
        for patch, name in zip(patches, names):
            patch.set_facecolor(colors[name])
            patch.set_alpha(alpha)
            patch.set_gid("duration")
        ax.set_xticks(np.arange(1, len(names) + 1))
        ax.set_xticklabels(names)
        ax.set_ylabel(f"trial duration ({unit})")
        ax.grid(axis="y", color="#E5E5E5", linewidth=0.6)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return ax


# -- swimmer plot ---------------------------------------------------------------------------
_PATIENT_COLS = ("patient", "dose", "infusion_day")


def _phase_names_wide(df) -> List[str]:
    names = []
    for c in df.columns:
        if c.endswith("_start_day"):
            n = c[: -len("_start_day")]
            if f"{n}_end_day" in df.columns and n not in ("window", "dlt"):
                names.append(n)
    return names


def _phase_color(name: str, i: int, kind: Optional[str] = None) -> str:
    if name in PHASE_COLORS:
        return PHASE_COLORS[name]
    if kind in PHASE_COLORS:
        return PHASE_COLORS[kind]
    return _EXTRA_PHASE_COLORS[i % len(_EXTRA_PHASE_COLORS)]


def _decision_list(decisions) -> List[Tuple[float, str]]:
    import pandas as pd
    if decisions is None:
        return []
    if isinstance(decisions, pd.DataFrame):
        day_col = "day" if "day" in decisions.columns else "decision_day"
        if day_col not in decisions.columns:
            raise ValueError("decisions need a 'day' column (and optionally 'label')")
        lab = decisions["label"] if "label" in decisions.columns else [""] * len(decisions)
        return [(float(d), "" if l is None or (isinstance(l, float) and math.isnan(l))
                 else str(l)) for d, l in zip(decisions[day_col], lab)]
    out = []
    for item in decisions:
        if isinstance(item, Mapping):
            out.append((float(item.get("day", item.get("decision_day"))),
                        str(item.get("label", ""))))
        elif isinstance(item, (tuple, list)):
            out.append((float(item[0]), str(item[1]) if len(item) > 1 else ""))
        else:
            out.append((float(item), ""))
    return out


def plot_swimmer(patients, ax=None, *, phases=None, decisions=None,
                 dose_labels: Optional[Sequence[str]] = None, time_unit: str = "days",
                 sort_by: Optional[str] = None, legend: bool = True,
                 title: Optional[str] = None):
    """One simulated trial, one horizontal lane per patient.

    ``patients``: the swimmer table, or the whole dict returned by
    :func:`escalation_sim.swimmer_data` (its ``decisions`` are then drawn unless
    ``decisions`` is given).  The table has one row per patient with columns ``patient``
    (id), ``dose`` (1-based),
    ``infusion_day`` (NaN when never infused), and optionally ``arrival_day``,
    ``dlt`` (bool), ``dlt_day``, ``window_end_day`` (end of DLT follow-up, or the drop-out
    day), ``evaluable`` (bool), and the pre-infusion phases either as wide columns
    ``<phase>_start_day`` / ``<phase>_end_day`` (the discrete-event engine's patient log) or
    as a separate long table ``phases`` with columns ``patient, phase, start_day, end_day``.

    Drawn per patient: a thin line from arrival to the end of follow-up (gaps = waiting),
    coloured bars for the phases (manufacturing, lymphodepletion ...), a triangle at the
    infusion (hollow when the product was below the assigned dose: column
    ``dose_received`` < 1), the DLT window as a bar coloured by dose (hatched when the patient
    was not evaluable), a red cross at each DLT, a grey cross for patients never infused and, with
    a graded truth (columns ``<type>_grade`` and ``<type>_onset_day``), a marker per
    toxicity type at each event's onset, sized and coloured by grade; backfill patients
    (column ``backfill``) are marked "backfill" in the lane label.
    ``decisions``: dose decisions as vertical lines: a DataFrame with ``day`` (and ``label``),
    or a list of days, ``(day, label)`` pairs or mappings.  Lanes keep the table's order
    (``sort_by``: a column to sort by first).  All days are calendar days since the trial
    opened.  The calendar engine's patient log is converted to this table by
    :func:`escalation_sim.engines.calendar.swimmer_table` (``swimmer_data`` does it for you);
    this function only draws.
    """
    import pandas as pd
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if isinstance(patients, Mapping) and "patients" in patients:     # swimmer_data(...)
        if decisions is None:
            decisions = patients.get("decisions")
        patients = patients["patients"]
    if not isinstance(patients, pd.DataFrame):
        patients = pd.DataFrame(patients)
    missing = [c for c in _PATIENT_COLS if c not in patients.columns]
    if missing and "dose_level" in patients.columns:
        raise ValueError("this is the calendar engine's raw patient log (days after infusion, "
                         "one row per arrival); convert one trial of it with "
                         "escalation_sim.engines.calendar.swimmer_table(log), or use "
                         "escalation_sim.swimmer_data(scenario, design, trial)")
    if missing:
        raise ValueError(f"patient table is missing columns {missing} "
                         f"(has {list(patients.columns)})")
    if time_unit not in ("days", "weeks", "months"):
        raise ValueError(f"time_unit must be 'days', 'weeks' or 'months' (got {time_unit!r})")
    scale = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12.0}[time_unit]
    df = patients.reset_index(drop=True)
    if sort_by is not None:
        df = df.sort_values([sort_by, "patient"], kind="stable").reset_index(drop=True)
    n = len(df)
    ax = _new_ax(ax, figsize=(9.0, max(2.5, 0.32 * n + 1.3)))
    ys = np.arange(n, dtype=float)
    row_of = {pid: i for i, pid in enumerate(df["patient"].tolist())}

    def col(name, default=np.nan):
        if name in df.columns:
            return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
        return np.full(n, default, dtype=float)

    arrival = col("arrival_day")
    infusion = col("infusion_day")
    window_end = col("window_end_day")
    dlt_day = col("dlt_day")
    dose = df["dose"].to_numpy()
    dlt = (df["dlt"].fillna(False).astype(bool).to_numpy() if "dlt" in df.columns
           else np.isfinite(dlt_day))
    evaluable = (df["evaluable"].fillna(True).astype(bool).to_numpy()
                 if "evaluable" in df.columns else np.ones(n, dtype=bool))

    # phase segments: name -> list of (row, start, end)
    segs: Dict[str, List[Tuple[int, float, float]]] = {}
    if phases is not None:
        ph = phases if isinstance(phases, pd.DataFrame) else pd.DataFrame(phases)
        need = {"patient", "phase", "start_day", "end_day"}
        if not need <= set(ph.columns):
            raise ValueError(f"phase table needs columns {sorted(need)} (has {list(ph.columns)})")
        for pid, name, a, b in zip(ph["patient"], ph["phase"], ph["start_day"], ph["end_day"]):
            if pid in row_of and np.isfinite(a) and np.isfinite(b) and b > a:
                segs.setdefault(str(name), []).append((row_of[pid], float(a), float(b)))
    else:
        for name in _phase_names_wide(df):
            a = col(f"{name}_start_day")
            b = col(f"{name}_end_day")
            for i in range(n):
                if np.isfinite(a[i]) and np.isfinite(b[i]) and b[i] > a[i]:
                    segs.setdefault(name, []).append((i, a[i], b[i]))

    # lane backbone: arrival (or first event) to end of follow-up (or last event)
    starts = np.where(np.isfinite(arrival), arrival, np.nan)
    ends = np.where(np.isfinite(window_end), window_end, np.nan)
    for name, lst in segs.items():
        for i, a, b in lst:
            starts[i] = a if not np.isfinite(starts[i]) else min(starts[i], a)
            ends[i] = b if not np.isfinite(ends[i]) else max(ends[i], b)
    for i in range(n):
        for v in (infusion[i], dlt_day[i]):
            if np.isfinite(v):
                starts[i] = v if not np.isfinite(starts[i]) else min(starts[i], v)
                ends[i] = v if not np.isfinite(ends[i]) else max(ends[i], v)
        if np.isfinite(starts[i]) and np.isfinite(ends[i]):
            ax.plot([starts[i] / scale, ends[i] / scale], [ys[i], ys[i]], color="#9A9A9A",
                    linewidth=0.8, zorder=1, gid="lane")

    handles: List[Any] = []
    hlabels: List[str] = []
    h = 0.62
    for j, (name, lst) in enumerate(segs.items()):
        color = _phase_color(name, j)
        rows = [s[0] for s in lst]
        left = [s[1] / scale for s in lst]
        width = [(s[2] - s[1]) / scale for s in lst]
        ax.barh(rows, width, left=left, height=h, color=color, edgecolor="#666666",
                linewidth=0.4, zorder=2, gid=f"phase:{name}", label=name)
        handles.append(Patch(facecolor=color, edgecolor="#666666", linewidth=0.4))
        hlabels.append(name)

    # DLT windows coloured by dose
    import matplotlib
    doses_present = sorted({int(d) for d in dose if pd.notna(d)})
    # colour by dose level on the scenario's scale, so a dose keeps its colour across trials
    max_dose = max([len(dose_labels) if dose_labels else 0] + doses_present + [1])
    cmap = matplotlib.colormaps["Blues"]
    dose_color = {d: cmap(0.3 + 0.6 * (d - 1) / max(max_dose - 1, 1)) for d in doses_present}
    win_rows = [i for i in range(n) if np.isfinite(infusion[i]) and np.isfinite(window_end[i])
                and window_end[i] >= infusion[i]]
    for i in win_rows:
        ax.barh(ys[i], (window_end[i] - infusion[i]) / scale, left=infusion[i] / scale,
                height=h, color=dose_color.get(int(dose[i]), "#F4A582"),
                edgecolor="#444444", linewidth=0.5, hatch=None if evaluable[i] else "////",
                alpha=1.0 if evaluable[i] else 0.55, zorder=2, gid="dlt-window")
    if win_rows:
        lab = (lambda d: dose_labels[d - 1]) if dose_labels else (lambda d: f"dose {d}")
        for d in doses_present:
            handles.append(Patch(facecolor=dose_color[d], edgecolor="#444444", linewidth=0.5))
            hlabels.append(f"DLT window, {lab(d)}")
        if not evaluable.all():
            handles.append(Patch(facecolor="white", edgecolor="#444444", hatch="////"))
            hlabels.append("not evaluable (left early)")

    inf = np.isfinite(infusion)
    received = col("dose_received", 1.0)           # conduct.shortfall: fraction received
    short = inf & np.isfinite(received) & (received < 1.0)
    full = inf & ~short
    if full.any():
        ax.plot(infusion[full] / scale, ys[full], linestyle="none", marker="v",
                color="#111111", markersize=6, zorder=4, gid="infusion")
        handles.append(Line2D([], [], linestyle="none", marker="v", color="#111111"))
        hlabels.append("infusion")
    if short.any():
        ax.plot(infusion[short] / scale, ys[short], linestyle="none", marker="v",
                markerfacecolor="white", markeredgecolor="#111111", markersize=7, zorder=4,
                gid="infusion-short")
        handles.append(Line2D([], [], linestyle="none", marker="v", markerfacecolor="white",
                              markeredgecolor="#111111"))
        hlabels.append("infusion below the assigned dose")
    # graded truth: each toxicity type's event (``<type>_grade`` > 0 at ``<type>_onset_day``)
    ev_types = [c[:-len("_onset_day")] for c in df.columns
                if c.endswith("_onset_day") and f"{c[:-len('_onset_day')]}_grade" in df.columns]
    for j, name in enumerate(ev_types):
        day = col(f"{name}_onset_day")
        grade = col(f"{name}_grade", 0.0)
        sel = np.isfinite(day) & (grade > 0)
        if not sel.any():
            continue
        mk = "os^Dv"[j % 5]
        ax.scatter(day[sel] / scale, ys[sel], marker=mk, s=12 + 10 * grade[sel],
                   c=[GRADE_COLORS[min(int(g), 5) - 1] for g in grade[sel]],
                   edgecolors="#333333", linewidths=0.5, zorder=5, gid=f"event:{name}")
        handles.append(Line2D([], [], linestyle="none", marker=mk, color="#F16913",
                              markeredgecolor="#333333"))
        hlabels.append(f"{name} onset (size, colour: grade)")
    has_dlt = dlt & np.isfinite(dlt_day)
    if has_dlt.any():
        ax.plot(dlt_day[has_dlt] / scale, ys[has_dlt], linestyle="none", marker="X",
                color="#D7191C", markeredgecolor="white", markeredgewidth=0.6, markersize=10,
                zorder=5, gid="dlt")
        handles.append(Line2D([], [], linestyle="none", marker="X", color="#D7191C",
                              markersize=8))
        hlabels.append("DLT")
    never = ~inf & np.isfinite(ends)
    if never.any():
        ax.plot(ends[never] / scale, ys[never], linestyle="none", marker="x", color="#777777",
                markersize=7, markeredgewidth=1.5, zorder=4, gid="not-infused")
        handles.append(Line2D([], [], linestyle="none", marker="x", color="#777777"))
        hlabels.append("never infused")

    decs = _decision_list(decisions)
    lo_x = np.nanmin(starts) if np.isfinite(starts).any() else 0.0
    hi_x = max([np.nanmax(ends) if np.isfinite(ends).any() else 0.0] + [d for d, _ in decs])
    for k, (day, label) in enumerate(decs):
        right = day > lo_x + 0.7 * (hi_x - lo_x)
        ax.axvline(day / scale, color="#2C3E50", linestyle=":", linewidth=1.1, zorder=3,
                   gid="decision")
        if label:
            ax.annotate(label, xy=(day / scale, -0.5 - 0.45 * (1 + k % 2)),
                        xytext=(-3 if right else 3, 0), textcoords="offset points",
                        va="center", ha="right" if right else "left",
                        fontsize="x-small", color="#2C3E50",
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                              "edgecolor": "none", "alpha": 0.8})
    if decs:
        handles.append(Line2D([], [], color="#2C3E50", linestyle=":"))
        hlabels.append("dose decision")

    def dl(d):
        if pd.isna(d):
            return "-"
        d = int(d)
        return dose_labels[d - 1] if dose_labels and 1 <= d <= len(dose_labels) else f"dose {d}"

    ax.set_yticks(ys)
    bf = (df["backfill"].fillna(False).astype(bool).to_numpy() if "backfill" in df.columns
          else np.zeros(n, dtype=bool))                # conduct.backfill
    ax.set_yticklabels([f"{pid} · {dl(d)}" + (" · backfill" if b else "")
                        for pid, d, b in zip(df["patient"], dose, bf)], fontsize="small")
    ax.set_ylim(n - 0.5, -0.5 - (1.4 if any(l for _, l in decs) else 0.0))
    ax.set_xlabel(f"{time_unit} since the trial opened")
    ax.set_ylabel("patient · dose")
    ax.grid(axis="x", color="#EEEEEE", linewidth=0.6)
    ax.set_axisbelow(True)
    if legend and handles:
        ax.legend(handles, hlabels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    return ax


# -- truth ----------------------------------------------------------------------------------
def plot_truth(data, ax=None, *, target: Optional[float] = None,
               band: Optional[Tuple[float, float]] = None,
               labels: Optional[Sequence[str]] = None, title: Optional[str] = None,
               legend: bool = True):
    """The true dose-toxicity curve with the target and a band around it.

    ``data``: a Scenario, a Results, or a sequence of true DLT probabilities (then give
    ``target``).  ``band``: a shaded interval, drawn only when one is used: the scenario's
    ``oc.acceptable`` band when it has one, or the band given (e.g. target +/- 0.05, the
    half-width of the CRM indifference interval of Cheung & Chappell 2002, Biometrics
    58:671).  The true MTD (dose closest to the target, lower on ties) is ringed.
    """
    scenario = None
    if _is_results(data):
        scenario = data.scenario
    elif hasattr(data, "p_true") and hasattr(data, "model"):
        scenario = data
    if scenario is not None:
        p = np.asarray(scenario.p_true, dtype=float)
        tgt = float(target if target is not None else scenario.target)
        if band is None and scenario.model.oc.acceptable is not None:
            band = tuple(scenario.model.oc.acceptable)
        if labels is None:
            labels = dose_tick_labels(scenario)
    else:
        p = np.asarray(list(data), dtype=float)
        if target is None:
            raise ValueError("give target= when plotting a bare sequence of probabilities")
        tgt = float(target)
    if labels is None:
        labels = [f"dose {k + 1}" for k in range(p.size)]
    ax = _new_ax(ax, figsize=(5.5, 3.6))
    x = np.arange(p.size)
    if band is not None:  # drawn only when a band is used (oc.acceptable, or given)
        ax.axhspan(band[0], band[1], color=TARGET_COLOR, alpha=0.12, linewidth=0,
                   label=f"acceptable {band[0]:g}-{band[1]:g}", gid="target-band")
    ax.axhline(tgt, color=TARGET_COLOR, linestyle="--", linewidth=1.1, label=f"target {tgt:g}",
               gid="target")
    ax.plot(x, p, "-o", color="#222222", linewidth=1.6, markersize=5, label="true P(DLT)",
            gid="truth")
    from .results.oc import true_mtd
    mtd = true_mtd(p, tgt)
    ax.plot([mtd], [p[mtd]], linestyle="none", marker="o", markersize=13, markerfacecolor="none",
            markeredgecolor=TARGET_COLOR, markeredgewidth=1.6, label="true MTD", gid="true-mtd")
    for xi, pi in zip(x, p):
        ax.annotate(f"{pi:.2f}", (xi, pi), xytext=(0, 8), textcoords="offset points",
                    ha="center", fontsize="small")
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, min(1.0, max(p.max(), band[1] if band else tgt) * 1.25 + 0.03))
    ax.set_ylabel("true P(DLT)")
    ax.grid(axis="y", color="#EEEEEE", linewidth=0.6)
    ax.set_axisbelow(True)
    if legend:
        ax.legend(frameon=False, fontsize="small", loc="upper left")
    if title:
        ax.set_title(title)
    return ax


# -- graded truth ---------------------------------------------------------------------------
#: colours of grades 1..5 (light to dark)
GRADE_COLORS = ["#FDD49E", "#FDAE6B", "#F16913", "#A63603", "#4D1B00"]
_TYPE_HATCHES = ["", "//", "..", "xx", "\\\\"]


def _outcome_model(data):
    """``(model, dose labels, window)`` of a Scenario, a Results or an OutcomeModel."""
    scenario = data.scenario if _is_results(data) else data
    if hasattr(scenario, "outcome_model") and hasattr(scenario, "model"):
        if not scenario.model.truth.graded:
            raise ValueError("the scenario's truth is binary (p_dlt): no grades or onsets to "
                             "draw; give truth.toxicities")
        return (scenario.outcome_model, dose_tick_labels(scenario),
                scenario.dlt_window_days)
    if hasattr(scenario, "grade_probs") and hasattr(scenario, "onset_cdfs"):
        return scenario, None, scenario.window_days
    raise TypeError(f"expected a Scenario, Results or OutcomeModel (got "
                    f"{type(data).__name__})")


def plot_grades(data, ax=None, *, labels: Optional[Sequence[str]] = None,
                title: Optional[str] = None, legend: bool = True):
    """The true distribution of each toxicity type's worst grade per dose, as stacked bars
    (one bar per type at each dose, hatched by type; grade 0, no event, is the rest up to 1).

    ``data``: a Scenario or Results with a graded truth, or an
    :class:`~escalation_sim.inputs.truth.OutcomeModel`; the probabilities are the truth's
    (``OutcomeModel.grade_probs``), this function only draws."""
    from matplotlib.patches import Patch
    model, lab, _ = _outcome_model(data)
    probs = model.grade_probs()
    names = list(probs)
    K = next(iter(probs.values())).shape[1]
    labels = list(labels) if labels is not None else (lab or [f"dose {k + 1}" for k in range(K)])
    ax = _new_ax(ax, figsize=(6.0, 3.6))
    J = len(names)
    width = 0.8 / J
    x = np.arange(K)
    top_grade = 0
    for j, name in enumerate(names):
        p = probs[name]
        bottom = np.zeros(K)
        xs = x - 0.4 + width * (j + 0.5)
        for g in range(1, p.shape[0]):
            if not p[g].any():
                continue
            top_grade = max(top_grade, g)
            ax.bar(xs, p[g], width=width * 0.92, bottom=bottom, color=GRADE_COLORS[g - 1],
                   edgecolor="#555555", linewidth=0.5, hatch=_TYPE_HATCHES[j % 5],
                   gid=f"grade:{name}:{g}")
            bottom += p[g]
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("true P(worst grade)")
    ax.set_ylim(0, 1.0)
    ax.grid(axis="y", color="#EEEEEE", linewidth=0.6)
    ax.set_axisbelow(True)
    if legend:
        handles = [Patch(facecolor=GRADE_COLORS[g - 1], edgecolor="#555555")
                   for g in range(1, top_grade + 1)]
        hl = [f"grade {g}" for g in range(1, top_grade + 1)]
        if J > 1:
            handles += [Patch(facecolor="white", edgecolor="#555555",
                              hatch=_TYPE_HATCHES[j % 5]) for j in range(J)]
            hl += names
        ax.legend(handles, hl, frameon=False, fontsize="small", loc="upper left",
                  ncol=2 if len(hl) > 5 else 1)
    ax.set_title(title if title is not None else
                 ("worst grade per dose: " + ", ".join(
                     f"{n}{' (' + _TYPE_HATCHES[j % 5] + ')' if _TYPE_HATCHES[j % 5] else ''}"
                     for j, n in enumerate(names)) if J > 1 else f"worst {names[0]} grade"),
                 fontsize="medium")
    return ax


def plot_onsets(data, ax=None, *, max_day: Optional[float] = None,
                title: Optional[str] = None, legend: bool = True):
    """The onset law of each toxicity type: P(onset by day x) after infusion, with the DLT
    window (an event starting after it is a late event, not a DLT).  A type without an onset
    law starts inside the window and is listed in the legend only.

    ``data``: as :func:`plot_grades`; the curves are the truth's (``OutcomeModel.onset_cdfs``)."""
    model, _, window = _outcome_model(data)
    hi = float(max_day) if max_day is not None else 1.5 * float(window)
    days = np.linspace(0.0, hi, 301)
    curves = model.onset_cdfs(days)
    ax = _new_ax(ax, figsize=(5.5, 3.6))
    colors = ["#2C7FB8", "#D95F0E", "#31A354", "#756BB1", "#636363"]
    for j, (name, cdf) in enumerate(curves.items()):
        c = colors[j % len(colors)]
        if cdf is None:
            ax.plot([], [], color=c, label=f"{name}: inside the window (no onset law)")
            continue
        q = float(model.onset_cdfs([window])[name][0])
        ax.plot(days, cdf, color=c, linewidth=1.8, gid=f"onset:{name}",
                label=f"{name}: P(onset <= day {window:g}) = {q:.4f}")
    ax.axvline(window, color=TARGET_COLOR, linestyle="--", linewidth=1.1, gid="window",
               label=f"DLT window ({window:g} days)")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("days after infusion")
    ax.set_ylabel("P(onset by day)")
    ax.grid(color="#EEEEEE", linewidth=0.6)
    ax.set_axisbelow(True)
    if legend:
        ax.legend(frameon=False, fontsize="small", loc="lower right")
    ax.set_title(title if title is not None else "onset of each toxicity type",
                 fontsize="medium")
    return ax


# -- several scenarios -----------------------------------------------------------------------
def plot_selection_by_scenario(oc_df, summary_df, fig=None, *, ncols: int = 3,
                               titles: Optional[Mapping[Any, str]] = None):
    """Selection % per dose, one small panel per scenario (study cell), designs as bars.

    ``oc_df`` / ``summary_df``: the tidy ``oc`` and ``summary`` tables of a study (grouped by
    ``cell``) or of one comparison (grouped by ``scenario``).  The true MTD's tick is marked
    with ``*`` and its bars' group shaded; the last group is "none" (no MTD selected).
    Returns the figure.
    """
    key = "cell" if "cell" in oc_df.columns else "scenario"
    groups = list(dict.fromkeys(oc_df[key].tolist()))
    n = len(groups)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    if fig is None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(3.6 * ncols, 2.6 * nrows + 0.6))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    designs = list(dict.fromkeys(oc_df["design"].tolist()))
    colors = design_colors(designs)
    width = 0.8 / max(len(designs), 1)
    for ax, g in zip(axes, groups):
        og = oc_df[oc_df[key] == g]
        sg = summary_df[summary_df[key] == g]
        labels = [str(x) for x in sg[sg["design"] == og["design"].iloc[0]]
                  .sort_values("dose")["label"]]
        K = len(labels)
        tm = og["true_mtd"].iloc[0]
        tm = None if tm is None or tm != tm else int(tm)
        x = np.arange(K + 1, dtype=float)
        if tm is not None:
            ax.axvspan(tm - 1 - 0.45, tm - 1 + 0.45, color="#F2F2F2", zorder=0)
        for i, d in enumerate(designs):
            ds = sg[sg["design"] == d].sort_values("dose")
            if ds.empty:
                continue
            none = og[og["design"] == d]["p_no_mtd"]
            h = np.append(ds["p_select"].to_numpy(float), float(none.iloc[0]))
            ax.bar(x - 0.4 + width * (i + 0.5), 100 * h, width * 0.92, color=colors[d],
                   label=d, gid="selection")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{l}*" if tm == k + 1 else l for k, l in enumerate(labels)]
                           + ["none"], fontsize="small")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", color="#E5E5E5", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_title((titles or {}).get(g, str(g)), fontsize="small")
    for ax in axes[::ncols]:
        ax.set_ylabel("selected (%)")
    if axes:
        handles, labs = axes[0].get_legend_handles_labels()
        fig.legend(handles, labs, loc="lower center", ncol=min(len(labs), 6), frameon=False)
        fig.tight_layout(rect=(0, 0.06 if nrows > 1 else 0.12, 1, 1))
    return fig
