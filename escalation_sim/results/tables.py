"""Results of a comparison: tidy tables, operating characteristics and metadata."""
from __future__ import annotations

import json
from functools import lru_cache
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..designs.base import Outcome
from ..types import STOP_CODES
from .oc import (OutcomeTally, compute_oc, efficacy_design_oc, graded_truth_oc,
                 obd_truth_sets, score_design_oc)

SCALAR_OC = ["pcs", "p_no_mtd", "p_select_overdose", "mean_n_total", "mean_dlt_total",
             "pct_patients_at_mtd", "pct_patients_above_mtd", "p_over60_above_mtd",
             "p_over80_above_mtd"]


@lru_cache(maxsize=1)
def _versions() -> Tuple[Tuple[str, str], ...]:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("escalation-sim", "numpy", "scipy", "pandas", "simpy", "joblib", "pydantic"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return tuple(out.items())


def versions() -> Dict[str, str]:
    """Python and package versions (cached: read once per process)."""
    return dict(_versions())


@dataclass
class DesignResult:
    name: str
    type: str
    tally: OutcomeTally
    durations: Optional[np.ndarray] = None
    des_totals: Dict[str, float] = field(default_factory=dict)
    trials: Optional[Dict[str, np.ndarray]] = None


def duration_summary(d: np.ndarray) -> Dict[str, float]:
    d = np.asarray(d, dtype=float)
    mean = math.fsum(d.tolist()) / d.size
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    q = np.quantile(d, [0.1, 0.5, 0.9])
    return {"mean": mean, "se_mean": sd / math.sqrt(d.size) if d.size else 0.0,
            "median": float(q[1]), "p10": float(q[0]), "p90": float(q[2])}


class Results:
    """Operating characteristics of several designs on one scenario."""

    def __init__(self, scenario, designs: List[DesignResult], pair_sums, n_trials: int,
                 seed: int, method: str, meta: Optional[Dict[str, Any]] = None):
        self.scenario = scenario
        self.designs = designs
        self.pair_sums = pair_sums
        self.n_trials = n_trials
        self.seed = seed
        self.method = method
        self.meta = dict(meta or {})
        self.meta.setdefault("versions", versions())
        self._oc_cache: Dict[str, Dict[str, Any]] = {}

    # -- per design ----------------------------------------------------------------------
    def design_oc(self, name: str) -> Dict[str, Any]:
        if name not in self._oc_cache:
            dr = self._get(name)
            oc = self._base_oc(dr)
            if dr.durations is not None:
                oc["duration_days"] = duration_summary(dr.durations)
                for k, v in dr.des_totals.items():
                    oc[k] = v
            self._oc_cache[name] = oc
        return self._oc_cache[name]

    def _base_oc(self, dr: DesignResult) -> Dict[str, Any]:
        """The OCs of one design.  Binary truth: exactly as always.  Graded truth: plus the
        per-type OCs (:func:`graded_truth_oc`) and the definition of the true target dose;
        a score design (gBOIN) gets its own true target dose (true mean normalized score
        closest to its target) and the score OCs (:func:`score_design_oc`)."""
        sc = self.scenario
        design = _design_of(sc, dr.name)
        if design is not None and design.outcome is Outcome.JOINT:
            eff = list(sc.model.truth.efficacy)
            oc = compute_oc(dr.tally, sc.p_true, sc.target, None,
                            sets=obd_truth_sets(design, sc.p_true, eff))
            oc = efficacy_design_oc(oc, dr.tally, design, sc.p_true, eff)
            if not sc.model.truth.graded:
                return oc
            return graded_truth_oc(oc, dr.tally, sc.outcome_model)
        if not sc.model.truth.graded:
            return compute_oc(dr.tally, sc.p_true, sc.target, sc.model.oc.acceptable)
        model = sc.outcome_model
        if design is not None and design.outcome is Outcome.SCORE:
            inner = design.inner
            ref = model.mean_score(inner.scores)
            oc = compute_oc(dr.tally, ref, inner.target, None)
            oc = score_design_oc(oc, dr.tally, inner.unit_scale, sc.p_true)
            oc["true_target_definition"] = (
                f"the dose whose true mean normalized score is closest to the design's "
                f"target {inner.target:.4g}")
            oc["true_mean_score"] = ref.tolist()
        else:
            oc = compute_oc(dr.tally, sc.p_true, sc.target, sc.model.oc.acceptable)
            band = sc.model.oc.acceptable
            oc["true_target_definition"] = (
                f"doses whose true DLT rate lies in [{band[0]:g}, {band[1]:g}]" if band else
                f"the dose whose true DLT rate is closest to the target {sc.target:g}")
        return graded_truth_oc(oc, dr.tally, model)

    def _get(self, name: str) -> DesignResult:
        for d in self.designs:
            if d.name == name:
                return d
        raise KeyError(f"no design named {name!r}")

    # -- tidy tables -------------------------------------------------------------------------
    def oc(self):
        """One row per scenario x design with every scalar OC and its SE."""
        import pandas as pd
        rows = []
        for d in self.designs:
            oc = self.design_oc(d.name)
            row = {"scenario": self.scenario.name, "design": d.name, "type": d.type,
                   "method": self.method, "n_trials": self.n_trials, "true_mtd": oc["true_mtd"]}
            for k in SCALAR_OC:
                row[k] = oc[k]
                row["se_" + k] = oc["se_" + k]
            if "duration_days" in oc:
                for k, v in oc["duration_days"].items():
                    row[f"duration_{k}"] = v
            if "true_target_definition" in oc:    # graded truths only (new columns)
                row["true_target_definition"] = oc["true_target_definition"]
                for k in ("mean_score_total",):
                    if k in oc:
                        row[k], row["se_" + k] = oc[k], oc["se_" + k]
                for t, v in oc.get("toxicity_types", {}).items():
                    row[f"mean_grade3_events_total_{t}"] = v["mean_grade3_events_total"]
                    row[f"se_mean_grade3_events_total_{t}"] = v["se_mean_grade3_events_total"]
            if "selects" in oc:                   # efficacy designs (OBD) only
                row["selects"] = oc["selects"]
                row["true_obd"] = oc["true_obd"]
                for k in ("p_select_obd", "mean_utility_selected", "mean_responders_total"):
                    row[k], row["se_" + k] = oc[k], oc["se_" + k]
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self):
        """One row per design x dose: selection, patients and DLTs with SEs."""
        import pandas as pd
        rows = []
        labels = self.scenario.dose_labels
        for d in self.designs:
            oc = self.design_oc(d.name)
            for k in range(self.scenario.n_doses):
                rows.append({"scenario": self.scenario.name, "design": d.name, "dose": k + 1,
                             "label": labels[k], "p_true": float(self.scenario.p_true[k]),
                             "p_select": oc["p_select"][k], "se_p_select": oc["se_p_select"][k],
                             "mean_n": oc["mean_n"][k], "se_mean_n": oc["se_mean_n"][k],
                             "mean_dlt": oc["mean_dlt"][k], "se_mean_dlt": oc["se_mean_dlt"][k],
                             **_graded_dose_columns(oc, k), **_obd_dose_columns(oc, k)})
        return pd.DataFrame(rows)

    def paired(self):
        """Paired differences (first minus second design) on the same simulated patients."""
        import pandas as pd
        rows = []
        R = self.n_trials
        for (a, b), sums in sorted(self.pair_sums.items()):
            for metric, (s, ss) in sums.items():
                mean = s / R
                var = (ss - R * mean * mean) / (R - 1) if R > 1 else 0.0
                se = 0.0 if self.method == "exact" else math.sqrt(max(var, 0.0) / R)
                rows.append({"scenario": self.scenario.name, "design_a": self.designs[a].name,
                             "design_b": self.designs[b].name, "metric": metric,
                             "mean_difference": mean, "se": se})
        return pd.DataFrame(rows, columns=["scenario", "design_a", "design_b", "metric",
                                           "mean_difference", "se"])

    def trials(self):
        """One row per trial x design (only when the run kept per-trial data)."""
        import pandas as pd
        frames = []
        for d in self.designs:
            if d.trials is None:
                raise ValueError("per-trial data were not kept; rerun with keep_trials=True")
            frames.append(trials_frame(self.scenario.name, d.name, d.trials))
        return pd.concat(frames, ignore_index=True)

    def doses_long(self):
        """One row per trial x design x dose (from the kept per-trial data), ordered by
        design name, trial and dose."""
        return doses_frame(self.trials(), self.scenario.n_doses).sort_values(
            ["design", "trial", "dose"], kind="stable").reset_index(drop=True)

    # -- documents -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        out = {"scenario": self.scenario.name, "source": self.scenario.source,
               "method": self.method, "seed": self.seed, "n_trials": self.n_trials,
               "target": self.scenario.target, "p_true": self.scenario.p_true.tolist(),
               "dose_labels": self.scenario.dose_labels, "designs": []}
        for d in self.designs:
            oc = self.design_oc(d.name)
            entry = {"design": d.name, "type": d.type,
                     "n_trials": self.n_trials if self.method != "exact" else None}
            entry.update({k: v for k, v in oc.items() if k not in ("n_trials", "exact")})
            out["designs"].append(entry)
        out["paired"] = self.paired().to_dict(orient="records")
        out["versions"] = self.meta.get("versions", {})
        for k in ("elapsed_s", "n_jobs", "backend", "chunk_size"):
            if k in self.meta:
                out[k] = self.meta[k]
        return out

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), default=_json_default, **kw)

    def write(self, out_dir, formats=("csv", "parquet"), outputs=None) -> List[Path]:
        """Write the tidy tables, the resolved scenario and metadata into ``out_dir``.

        Every file is written atomically (temporary file, fsync, rename) and the folder's
        ``manifest.json`` (each file's size and SHA-256) is written last; see
        :mod:`escalation_sim.results.files`.  ``outputs``: an :class:`OutputSet` already holding
        files of this run (e.g. per-trial tables streamed to disk), committed here with the rest.
        """
        import yaml
        from .files import OutputSet
        out = OutputSet(out_dir) if outputs is None else outputs
        out.start()
        written = []
        tables = {"oc": self.oc_file(), "summary": self.summary(), "paired": self.paired()}
        if all(d.trials is not None for d in self.designs):
            tables["trials"] = self.trials()
            tables["trial_doses"] = self.doses_long()
        for name, df in tables.items():
            written += out.write_frame(df, name, formats)
        from .display import cohort_size_notes
        notes = "".join(f"# note: {n}\n" for n in cohort_size_notes(
            self.scenario, [d.name for d in self.designs]))
        written.append(out.write_text("scenario.resolved.yaml", notes + yaml.safe_dump(
            self.scenario.resolved(), sort_keys=False)))
        written.append(out.write_text("results.json", self.to_json(indent=2)))
        out.commit({"scenario": self.scenario.name, "method": self.method,
                    "n_trials": self.n_trials, "seed": self.seed})
        return written

    # -- display -----------------------------------------------------------------------------
    def oc_file(self):
        """The ``oc`` table as written to ``oc.csv``: :meth:`oc` plus the stop reasons
        (``stop_<reason>`` proportions with ``se_stop_<reason>``)."""
        from .display import stop_reason_columns
        df = self.oc()
        extra = [stop_reason_columns(self.design_oc(d.name),
                                     None if self.method == "exact" else self.n_trials)
                 for d in self.designs]
        cols = sorted({k for e in extra for k in e if not k.startswith("se_")})
        for c in cols:
            df[c] = [e.get(c, 0.0) for e in extra]
            df["se_" + c] = [e.get("se_" + c, 0.0) for e in extra]
        return df

    def table(self) -> str:
        """A readable comparison table for the terminal: percentages with their SEs."""
        from .display import STOP_LABELS, legend_text, num, pct
        exact = self.method == "exact"
        labels = self.scenario.dose_labels
        ocs = {d.name: self.design_oc(d.name) for d in self.designs}
        w = max(12, max(len(d.name) for d in self.designs) + 2)
        tm = next(iter(ocs.values()))["true_mtd"]
        if any("selects" in oc for oc in ocs.values()):   # efficacy designs: true_mtd is
            tm = next((oc["true_mtd"] for oc in ocs.values()   # their OBD; show the MTD
                       if "selects" not in oc), None)
            if tm is None:
                from .oc import truth_sets, true_mtd
                ok, _ = truth_sets(self.scenario.p_true, self.scenario.target,
                                   self.scenario.model.oc.acceptable)
                tm = true_mtd(self.scenario.p_true, self.scenario.target) + 1 \
                    if ok.any() else None
        lines = []
        title = (f"{self.scenario.name}: target {self.scenario.target:g}, "
                 f"{'exact' if exact else f'{self.n_trials:,} trials, seed {self.seed}'}")
        lines.append(title)
        lines.append("true DLT rate".ljust(w) + "".join(
            f"{l}{'*' if tm == k + 1 else ''} {p:.2f}".rjust(13)
            for k, (l, p) in enumerate(zip(labels, self.scenario.p_true))))
        lines.append("")
        lines.append("Selection %" + ("" if exact else " (SE)"))
        cw = 13
        lines.append(f"{'':<{w}}" + "".join(f"{l:>{cw}}" for l in labels) + f"{'none':>{cw}}")
        for name, oc in ocs.items():
            ses = [None] * len(labels) if exact else oc["se_p_select"]
            lines.append(f"{name:<{w}}" + "".join(pct(p, s).rjust(cw)
                                                    for p, s in zip(oc["p_select"], ses))
                         + pct(oc["p_no_mtd"], None if exact else oc["se_p_no_mtd"]).rjust(cw))
        lines.append("")
        lines.append("Mean patients (DLTs) per dose")
        lines.append(f"{'':<{w}}" + "".join(f"{l:>13}" for l in labels) + f"{'total':>13}")
        for name, oc in ocs.items():
            cells = "".join(f"{num(n, 2):>7} ({num(y, 2)})".rjust(13)
                            for n, y in zip(oc["mean_n"], oc["mean_dlt"]))
            lines.append(f"{name:<{w}}" + cells +
                         f"{num(oc['mean_n_total'], 2):>7} ({num(oc['mean_dlt_total'], 2)})"
                         .rjust(13))
        lines.append("")
        se = (lambda k, oc: None) if exact else (lambda k, oc: oc["se_" + k])
        hdr = (f"{'':<{w}}{'PCS %':>13}{'P(over) %':>13}{'% pts > MTD':>13}"
               f"{'early stop %':>14}")
        has_dur = any("duration_days" in oc for oc in ocs.values())
        if has_dur:
            hdr += f"{'days mean':>11}{'median':>8}{'p10':>7}{'p90':>7}"
        lines.append(hdr)
        for name, oc in ocs.items():
            row = (f"{name:<{w}}{pct(oc['pcs'], se('pcs', oc)):>13}"
                   f"{pct(oc['p_select_overdose'], se('p_select_overdose', oc)):>13}"
                   f"{pct(oc['pct_patients_above_mtd'], se('pct_patients_above_mtd', oc)):>13}"
                   f"{pct(oc['p_no_mtd'], se('p_no_mtd', oc)):>14}")
            if "duration_days" in oc:
                dd = oc["duration_days"]
                row += (f"{num(dd['mean'], 0):>11}{num(dd['median'], 0):>8}"
                        f"{num(dd['p10'], 0):>7}{num(dd['p90'], 0):>7}")
            lines.append(row)
        split = [d for d in self.designs if "mean_n_backfill" in (d.des_totals or {})]
        if split:      # conduct.backfill: escalation and backfill patients (DLTs)
            lines.append("")
            lines.append(f"{'patients (DLTs)':<{w}}{'escalation':>18}{'backfill':>18}")
            for d in split:
                t = d.des_totals
                lines.append(f"{d.name:<{w}}" + "".join(
                    f"{t['mean_n_' + k]:.2f} ({t['mean_y_' + k]:.2f})".rjust(18)
                    for k in ("escalation", "backfill")))
        reasons = sorted({k for oc in ocs.values() for k in oc.get("stop_reasons", {})})
        if reasons:
            lines.append("")
            lines.append("Why trials stopped, %" + ("" if exact else " (SE)"))
            rw = max(len(STOP_LABELS.get(r, r)) for r in reasons) + 2
            lines.append(f"{'':<{rw}}" + "".join(f"{n:>{max(13, len(n) + 2)}}" for n in ocs))
            for r in reasons:
                cells = ""
                for n, oc in ocs.items():
                    p = oc.get("stop_reasons", {}).get(r, 0.0)
                    s = None if exact else math.sqrt(max(p * (1 - p), 0.0) / self.n_trials)
                    cells += pct(p, s).rjust(max(13, len(n) + 2))
                lines.append(f"{STOP_LABELS.get(r, r):<{rw}}" + cells)
        lines.append("")
        lines.append(f"* true MTD: dose {tm}." if tm is not None else
                     "No true MTD: even dose 1 is too toxic, stopping is correct.")
        keys = ["Sel %", "none", "PCS", "P(over)", "% pts > MTD", "early stop", "MTD", "SE"]
        lines.extend(_wrap(legend_text(keys, exact=exact), 100))
        if any("selects" in oc for oc in ocs.values()):
            lines += self._obd_lines(w, ocs, exact)
        if self.scenario.model.truth.graded:
            lines += self._graded_lines(w)
        return "\n".join(lines)

    def _obd_lines(self, w: int, ocs: Dict[str, Dict[str, Any]], exact: bool) -> List[str]:
        """The efficacy designs' part of :meth:`table` (BOIN12, Keyboard phase I/II): they
        select an optimal biological dose (OBD), so their PCS, P(over) and % pts > MTD above
        refer to their true OBD; here the truth's response rates and utilities, P(select the
        true OBD), the mean true utility of the selected dose and the mean responders."""
        from .display import num, pct
        labels = self.scenario.dose_labels
        obd = {n: oc for n, oc in ocs.items() if "selects" in oc}
        first = next(iter(obd.values()))
        lines = ["", "Efficacy designs: they select the optimal biological dose (OBD); their "
                     "PCS, P(over) and % pts > MTD refer to their true OBD",
                 "true response rate".ljust(w) + "".join(
                     f"{l} {q:.2f}".rjust(13) for l, q in zip(labels, first["p_response"]))]
        for name, oc in obd.items():
            t = oc["true_obd"]
            lines.append(f"{name:<{w}}true utility " + ", ".join(
                f"{u:.3g}{'' if a else ' (not adm.)'}"
                for u, a in zip(oc["true_utility"], oc["true_admissible"]))
                + f"; true OBD: {'none' if t is None else f'dose {t}'}")
        se = (lambda k, oc: None) if exact else (lambda k, oc: oc["se_" + k])
        lines.append(f"{'':<{w}}{'P(OBD) %':>13}{'utility':>13}{'responders':>13}"
                     + "".join(f"{l:>13}" for l in labels))
        for name, oc in obd.items():
            u = oc["mean_utility_selected"]
            lines.append(f"{name:<{w}}{pct(oc['p_select_obd'], se('p_select_obd', oc)):>13}"
                         f"{num(u, 3):>13}{num(oc['mean_responders_total'], 2):>13}"
                         + "".join(f"{num(m, 2):>13}" for m in oc["mean_responders"]))
        lines.append("P(OBD): P(select the true OBD) (P(no selection) when no dose is "
                     "admissible); utility: mean true utility of the selected dose (no "
                     "selection counts 0); responders: E[patients] x P(response) per dose "
                     "(Wald's identity) and in all.")
        for name, oc in obd.items():
            lines.append(f"{name}: true OBD = {oc['true_obd_definition']}")
        return lines

    def _graded_lines(self, w: int) -> List[str]:
        """The graded truth's part of :meth:`table`: each design's true target dose and its
        definition, grade >= 3 events per type, late events, responders, mean scores."""
        labels = self.scenario.dose_labels
        lines = ["", "True target dose (PCS and overdoses use it):"]
        for d in self.designs:
            oc = self.design_oc(d.name)
            tm = oc["true_mtd"]
            lines.append(f"{d.name:<{w}}{'none' if tm is None else f'dose {tm}'}: "
                         f"{oc['true_target_definition']}")
        first = self.design_oc(self.designs[0].name)
        lines += ["", "Patients with a grade >= 3 event per trial, by type and dose "
                      "(E[n] x P(grade >= 3))"]
        lines.append(f"{'':<{w}}" + "".join(f"{l:>9}" for l in labels) + f"{'total':>9}")
        for t, v in first["toxicity_types"].items():
            lines.append(f"{'P ' + t:<{w}}" + "".join(f"{p:9.3f}" for p in v["p_grade3"]))
        for d in self.designs:
            for t, v in self.design_oc(d.name)["toxicity_types"].items():
                lines.append(f"{(d.name + ' ' + t):<{w}}"
                             + "".join(f"{m:9.3f}" for m in v["mean_grade3_events"])
                             + f"{v['mean_grade3_events_total']:9.3f}")
        if any(x > 0 for x in first["p_late"]):
            lines += ["", "Late events per trial (qualifying, starting after the DLT window)"]
            for d in self.designs:
                oc = self.design_oc(d.name)
                lines.append(f"{d.name:<{w}}" + "".join(f"{m:9.3f}"
                                                       for m in oc["mean_late_events"]))
        if "mean_responders" in first:
            lines += ["", "Responders per trial by dose (E[n] x P(response))"]
            for d in self.designs:
                oc = self.design_oc(d.name)
                lines.append(f"{d.name:<{w}}" + "".join(f"{m:9.3f}"
                                                       for m in oc["mean_responders"]))
        scored = [d for d in self.designs if "mean_score" in self.design_oc(d.name)]
        if scored:
            lines += ["", "Normalized score sum per trial by dose (score designs; true mean "
                          "score per patient first)"]
            oc0 = self.design_oc(scored[0].name)
            lines.append(f"{'true mean':<{w}}" + "".join(f"{m:9.3f}"
                                                         for m in oc0["true_mean_score"]))
            for d in scored:
                oc = self.design_oc(d.name)
                lines.append(f"{d.name:<{w}}" + "".join(f"{m:9.3f}" for m in oc["mean_score"]))
        return lines

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """In a notebook: the standard OC table in percentages with SEs."""
        from .display import protocol_blocks, render_html, table_note
        oc = self.oc()
        has_dur = "duration_mean" in oc.columns and oc["duration_mean"].notna().any()
        return ("<div><b>escalation-sim results</b>" + render_html(
            protocol_blocks(oc, self.summary()),
            table_note(False, self.method == "exact", has_dur)) + "</div>")

    # -- saving and loading (added for the report / notebooks) ---------------------------------
    _PARQUET_KEY = b"escalation_sim.results.tables"

    def to_parquet(self, path) -> Path:
        """Save everything needed to rebuild these results into one Parquet file.

        The table holds the outcome tallies (one row per design x distinct trial ending:
        ``mtd`` 1-based or 0 = none, ``stop_code``, ``n_<d>``, ``dlt_<d>``, ``weight``); the
        file's metadata holds the scenario as written, seed, trial count, method, paired sums,
        per-trial durations and run metadata.  Per-trial tables (``keep_trials``) are not
        stored.  Read back with :meth:`Results.from_parquet`.
        """
        import base64
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq
        K = self.scenario.n_doses
        rows = []
        for i, d in enumerate(self.designs):
            for (mtd, stop, n, y), w in sorted(d.tally.counts.items()):
                row = {"design_index": i, "design": d.name, "mtd": mtd + 1 if mtd >= 0 else 0,
                       "stop_code": int(stop)}
                row.update({f"n_{k + 1}": int(n[k]) for k in range(K)})
                row.update({f"dlt_{k + 1}": int(y[k]) for k in range(K)})
                row["weight"] = float(w)
                rows.append(row)
        cols = (["design_index", "design", "mtd", "stop_code"] +
                [f"n_{k + 1}" for k in range(K)] + [f"dlt_{k + 1}" for k in range(K)] +
                ["weight"])
        df = pd.DataFrame(rows, columns=cols)
        meta = {
            "format": 1, "scenario_raw": self.scenario.raw, "source": self.scenario.source,
            "n_trials": self.n_trials, "seed": self.seed, "method": self.method,
            "meta": self.meta,
            "designs": [{"name": d.name, "type": d.type, "exact": bool(d.tally.exact),
                         "integer_weights": all(isinstance(w, (int, np.integer))
                                                for w in d.tally.counts.values()),
                         "des_totals": d.des_totals,
                         "durations": (None if d.durations is None else base64.b64encode(
                             np.ascontiguousarray(d.durations, dtype="<f8").tobytes()
                         ).decode("ascii"))} for d in self.designs],
            "pair_sums": [[a, b, m, v[0], v[1]] for (a, b), sums in sorted(self.pair_sums.items())
                          for m, v in sums.items()],
        }
        table = pa.Table.from_pandas(df, preserve_index=False)
        md = dict(table.schema.metadata or {})
        md[self._PARQUET_KEY] = json.dumps(meta, default=_json_default).encode("utf-8")
        table = table.replace_schema_metadata(md)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return path

    @classmethod
    def from_parquet(cls, path) -> "Results":
        """Rebuild the :class:`Results` saved by :meth:`to_parquet` (same tables, same OCs)."""
        import base64
        import pyarrow.parquet as pq
        from .oc import OutcomeTally
        from ..inputs.scenario import load_scenario_dict
        table = pq.read_table(path)
        raw_meta = (table.schema.metadata or {}).get(cls._PARQUET_KEY)
        if raw_meta is None:
            raise ValueError(f"{path}: not a file written by Results.to_parquet")
        meta = json.loads(raw_meta.decode("utf-8"))
        sc = load_scenario_dict(meta["scenario_raw"], meta.get("source", str(path)))
        K = sc.n_doses
        df = table.to_pandas()
        designs = []
        for i, dm in enumerate(meta["designs"]):
            t = OutcomeTally(K, exact=dm["exact"])
            sub = df[df["design_index"] == i]
            n = sub[[f"n_{k + 1}" for k in range(K)]].to_numpy(dtype=np.int64)
            y = sub[[f"dlt_{k + 1}" for k in range(K)]].to_numpy(dtype=np.int64)
            for r, (mtd, stop, w) in enumerate(zip(sub["mtd"].tolist(), sub["stop_code"].tolist(),
                                                   sub["weight"].tolist())):
                key = (int(mtd) - 1 if mtd > 0 else -1, int(stop), tuple(map(int, n[r])),
                       tuple(map(int, y[r])))
                t.add(key, int(round(w)) if dm["integer_weights"] else float(w))
            dur = None
            if dm["durations"] is not None:
                dur = np.frombuffer(base64.b64decode(dm["durations"]), dtype="<f8").astype(float)
            designs.append(DesignResult(dm["name"], dm["type"], t, dur, dict(dm["des_totals"])))
        pair_sums: Dict[Any, Dict[str, List[float]]] = {}
        for a, b, m, s1, s2 in meta["pair_sums"]:
            pair_sums.setdefault((int(a), int(b)), {})[m] = [s1, s2]
        return cls(sc, designs, pair_sums, int(meta["n_trials"]), int(meta["seed"]),
                   meta["method"], meta.get("meta"))

    @staticmethod
    def read_tables(out_dir) -> Dict[str, Any]:
        """The tidy tables written by :meth:`write` (``oc``, ``summary``, ``paired``, and
        ``trials`` / ``trial_doses`` when kept), read back as DataFrames (Parquet when
        present, else CSV)."""
        import pandas as pd
        out = Path(out_dir)
        tables = {}
        for name in ("oc", "summary", "paired", "trials", "trial_doses"):
            pq_path, csv_path = out / f"{name}.parquet", out / f"{name}.csv"
            if pq_path.exists():
                try:
                    tables[name] = pd.read_parquet(pq_path)
                    continue
                except ImportError:
                    pass
            if csv_path.exists():
                tables[name] = pd.read_csv(csv_path)
        if not tables:
            raise FileNotFoundError(f"{out}: no tables written by Results.write")
        return tables


def _graded_dose_columns(oc: Dict[str, Any], k: int) -> Dict[str, Any]:
    """The per-dose columns a graded truth adds to the summary table (none for a binary
    truth): per type P(grade >= 3) and the mean grade >= 3 events per trial, late events,
    responders (with efficacy) and, for score designs, the mean normalized score sum."""
    if "toxicity_types" not in oc:
        return {}
    out: Dict[str, Any] = {}
    for t, v in oc["toxicity_types"].items():
        out[f"p_grade3_{t}"] = v["p_grade3"][k]
        out[f"mean_grade3_events_{t}"] = v["mean_grade3_events"][k]
        out[f"se_mean_grade3_events_{t}"] = v["se_mean_grade3_events"][k]
    out["p_late"] = oc["p_late"][k]
    out["mean_late_events"] = oc["mean_late_events"][k]
    out["se_mean_late_events"] = oc["se_mean_late_events"][k]
    if "mean_responders" in oc:
        out["p_response"] = oc["p_response"][k]
        out["mean_responders"] = oc["mean_responders"][k]
        out["se_mean_responders"] = oc["se_mean_responders"][k]
    if "mean_score" in oc:
        out["true_mean_score"] = oc["true_mean_score"][k]
        out["mean_score"] = oc["mean_score"][k]
        out["se_mean_score"] = oc["se_mean_score"][k]
    return out


def _obd_dose_columns(oc: Dict[str, Any], k: int) -> Dict[str, Any]:
    """The per-dose columns of an efficacy design (none for other designs): the truth's
    response rate and utility, and the mean responders per trial."""
    if "selects" not in oc:
        return {}
    return {"p_response": oc["p_response"][k], "true_utility": oc["true_utility"][k],
            "true_admissible": oc["true_admissible"][k],
            "mean_responders": oc["mean_responders"][k],
            "se_mean_responders": oc["se_mean_responders"][k]}


def _design_of(scenario, name: str):
    """The built design named ``name`` in the scenario, or None."""
    for item in scenario.designs:
        if item.name == name:
            return item.design
    return None


def _wrap(text: str, width: int) -> List[str]:
    import textwrap
    return textwrap.wrap(text, width)


def trials_frame(scenario_name: str, design_name: str, trials: Dict[str, np.ndarray]):
    """The per-trial table of one design: ``mtd`` 1-based (0 = none), ``stop_reason`` by name,
    the scenario and design in front."""
    import pandas as pd
    df = pd.DataFrame(trials)
    mtd = np.asarray(trials["mtd"])
    df["mtd"] = np.where(mtd >= 0, mtd + 1, 0)
    names = np.array([(r.value if r else "none") for r in STOP_CODES], dtype=object)
    df["stop_reason"] = names[np.asarray(df.pop("stop_code"), dtype=np.int64)].tolist()
    df.insert(0, "design", design_name)
    df.insert(0, "scenario", scenario_name)
    return df


def doses_frame(trials_df, n_doses: int):
    """One row per trial x dose of a per-trial table (dose by dose; sort as needed)."""
    import pandas as pd
    t = trials_df
    parts = []
    for k in range(1, n_doses + 1):
        parts.append(pd.DataFrame({"scenario": t["scenario"], "design": t["design"],
                                   "trial": t["trial"], "dose": k, "n": t[f"n_{k}"],
                                   "dlt": t[f"dlt_{k}"]}))
    return pd.concat(parts, ignore_index=True)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
