"""The README's comparison of every time-free design on the six standard scenarios, by exact
enumeration.

For each of scenarios/standard_{mtd1,mtd2,mtd3,mtd4,all_safe,all_toxic}.yaml (4 doses, target
0.25, N = 24 in cohorts of 3): the scenario's own designs (3+3, BOIN, CRM) plus mTPI-2,
Keyboard, i3+3, BLRM and the rolling six on complete data with their defaults (added here; the
scenario files are unchanged), exact operating characteristics (``escalation-sim exact``): PCS,
the probability of selecting an overdose and the mean number of patients.  The standard
scenarios name their doses without amounts, so the BLRM is given the amounts 10, 20, 40, 80
(``dose_amounts``; reference dose 40, the default dose K//2 + 1), as in benchmarks/bench_oc.py.
``rolling6-complete`` takes its default cohorts of 1 (the patient-by-patient rule; in cohorts
of 3 it is the 3+3).  The time-to-event designs (TITE-CRM, TITE-BOIN, rolling6) need calendar
time and have no exact OCs.  Prints the markdown; ``--readme`` also replaces
the block between the markers in README.md.

    python docs/standard_table.py [--readme]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("mtd1", "mtd2", "mtd3", "mtd4", "all_safe", "all_toxic")
EXTRA = ({"type": "mtpi2"}, {"type": "keyboard"}, {"type": "i3+3"},
         {"type": "blrm", "dose_amounts": [10, 20, 40, 80]}, {"type": "rolling6-complete"})
LABELS = {"3+3": "3+3", "boin": "BOIN", "crm": "CRM", "mtpi2": "mTPI-2",
          "keyboard": "Keyboard", "i3+3": "i3+3", "blrm": "BLRM (EWOC)",
          "rolling6-complete": "rolling six (complete data)"}
START, END = "<!-- standard-table:start -->", "<!-- standard-table:end -->"


def compute():
    """{scenario: (truth, {design: oc})} by exact enumeration."""
    from escalation_sim import exact_oc
    from escalation_sim.inputs.scenario import load_scenario, load_scenario_dict
    out = {}
    for s in SCENARIOS:
        path = ROOT / "scenarios" / f"standard_{s}.yaml"
        base = load_scenario(path)
        raw = dict(base.raw)
        raw["designs"] = list(raw["designs"]) + list(EXTRA)
        sc = load_scenario_dict(raw, str(path))
        res = exact_oc(None, sc)
        out[s] = (list(sc.p_true), {d.name: res.design_oc(d.name) for d in sc.designs})
    return out


def markdown(data) -> str:
    designs = list(next(iter(data.values()))[1])
    head = "| design | " + " | ".join(
        f"{s} ({' / '.join(f'{p:g}' for p in truth)})" for s, (truth, _) in data.items()) + " |"
    rule = "|---|" + "---|" * len(data)
    blocks = []
    for title, key, fmt in (("PCS (probability of correct selection)", "pcs", "{:.3f}"),
                            ("P(select an overdose)", "p_select_overdose", "{:.3f}"),
                            ("mean number of patients", "mean_n_total", "{:.1f}")):
        rows = [f"| {LABELS.get(d, d)} | " + " | ".join(fmt.format(data[s][1][d][key])
                                                       for s in data) + " |"
                for d in designs]
        blocks.append(f"**{title}**\n\n{head}\n{rule}\n" + "\n".join(rows))
    return "\n\n".join(blocks)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readme", action="store_true", help="update README.md in place")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    text = markdown(compute())
    print(text)
    if args.readme:
        readme = ROOT / "README.md"
        old = readme.read_text(encoding="utf-8")
        if START not in old or END not in old:
            print(f"README.md has no {START} ... {END} block", file=sys.stderr)
            return 1
        head, rest = old.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{text}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
