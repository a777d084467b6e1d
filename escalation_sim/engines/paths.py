"""Dose paths: every possible course of the next k cohorts from the current data.

Each node holds the decision at that point; its children are the cohort's possible outcomes
(``"NNN"``, ``"NNT"``, ... grouped by number of DLTs, since designs see counts).  For a
toxicity-and-efficacy design (BOIN12, Keyboard phase I/II) the children are the cohort's
joint outcomes grouped by their counts of B (both), T (DLT only), E (response only) and N
(neither): C(c + 3, 3) children per cohort of c (20 for c = 3); stopped nodes then carry the
selected OBD (``"mtd"``, with ``"selects": "OBD"``).  Used for
protocol appendices ("if the next cohort has 1 DLT we will ...").
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..designs.base import Design
from ..types import TrialState


def dose_paths(design: Design, state: TrialState, cohorts: int,
               truth: Optional[Sequence[float]] = None,
               cohort_sizes: Optional[Sequence[int]] = None,
               efficacy: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Nested dict: ``{"n": [...], "dlt": [...], "next_dose", "cohort_size", "stop_reason",
    "reason", "children": [...]}`` (doses 1-based; a stopped node adds ``"mtd"``).

    ``truth`` (true DLT rate per dose): every node gets ``"probability"``, the chance of
    reaching it from the root, and each child ``"p_outcome"``, the binomial chance of its
    cohort's outcome (all orders of the letters together).  ``cohort_sizes``: the size of
    each of the next cohorts (overriding the design's; ``cohorts`` is then its length).
    ``efficacy`` (a joint design with ``truth``): the true response rate per dose; each child's
    ``p_outcome`` is then the multinomial chance of its counts (DLT and response
    independent)."""
    from ..designs.base import Outcome
    joint = design.outcome is Outcome.JOINT
    if joint:
        if truth is not None and efficacy is None:
            raise ValueError("a design that uses responses needs the response rates "
                             "(efficacy) as well as the DLT rates for path probabilities")
        if efficacy is not None:
            efficacy = [float(q) for q in efficacy]
            if len(efficacy) != state.n_doses or not all(0.0 <= q <= 1.0 for q in efficacy):
                raise ValueError(f"efficacy needs {state.n_doses} probabilities in [0, 1] "
                                 f"(got {efficacy})")
    elif efficacy is not None:
        raise ValueError("efficacy: this design does not use responses")
    elif design.outcome is not Outcome.BINARY_DLT:
        raise ValueError(f"dose paths enumerate DLT counts: not for a design whose patients "
                         f"contribute a {design.outcome.value}")
    if cohort_sizes is not None:
        sizes = [int(c) for c in cohort_sizes]
        if not sizes or any(c < 1 for c in sizes):
            raise ValueError(f"cohort sizes must be integers >= 1 (got {list(cohort_sizes)})")
        cohorts = len(sizes)
    else:
        sizes = None
    if truth is not None:
        truth = [float(p) for p in truth]
        if len(truth) != state.n_doses or not all(0.0 <= p <= 1.0 for p in truth):
            raise ValueError(f"truth needs {state.n_doses} probabilities in [0, 1] "
                             f"(got {truth})")
    if joint:
        return _joint_node(design, state, cohorts, truth, efficacy, sizes, 0, 1.0)
    return _node(design, state, cohorts, truth, sizes, 0, 1.0)


def joint_outcomes(c: int):
    """``(n_both, n_dlt_only, n_response_only, n_neither)`` of a cohort of c, in the order
    the paths list them."""
    for b in range(c + 1):
        for t in range(c + 1 - b):
            for e in range(c + 1 - b - t):
                yield b, t, e, c - b - t - e


def _head(design, state, cohorts, truth, sizes, depth, prob, **counts):
    """``(decision, node, size of the cohort to branch on)`` at ``state``; the size is
    None at a leaf (a stop, or the end of the cohorts asked for).  ``counts``: more
    per-dose counts for the node, after the DLTs."""
    dec = design.decide(state)
    node: Dict[str, Any] = {
        "n": list(state.n), "dlt": list(state.y), **counts,
        "next_dose": None if dec.stop else dec.dose + 1,
        "cohort_size": None if dec.stop else dec.cohort_size,
        "stop_reason": dec.stop_reason.value if dec.stop_reason else None,
        "reason": dec.reason, "children": []}
    if truth is not None:
        node["probability"] = prob
    if dec.stop:
        m = design.select_mtd(state)
        node["mtd"] = None if m is None else m + 1
        return dec, node, None
    if depth >= cohorts:
        return dec, node, None
    c = dec.cohort_size if sizes is None else sizes[depth]
    if sizes is not None:
        node["cohort_size"] = c
    return dec, node, c


def _joint_node(design, state, cohorts, truth, eff, sizes, depth, prob) -> Dict[str, Any]:
    dec, node, c = _head(design, state, cohorts, truth, sizes, depth, prob,
                         responders=list(state.e))
    if dec.stop:
        node["selects"] = "OBD"
    if c is None:
        return node
    for b, t, e, z in joint_outcomes(c):
        p_o = None
        if truth is not None:
            p, q = truth[dec.dose], eff[dec.dose]
            p_o = (math.factorial(c) / (math.factorial(b) * math.factorial(t)
                                        * math.factorial(e) * math.factorial(z))
                   * (p * q) ** b * (p * (1 - q)) ** t * ((1 - p) * q) ** e
                   * ((1 - p) * (1 - q)) ** z)
        after = state.add_cohort(dec.dose, c, b + t, e=b + e, b=b)
        child = _joint_node(design, after, cohorts, truth, eff, sizes, depth + 1,
                            prob * p_o if p_o is not None else 1.0)
        child["outcome"] = f"{dec.dose + 1}" + "B" * b + "T" * t + "E" * e + "N" * z
        if p_o is not None:
            child["p_outcome"] = p_o
        node["children"].append(child)
    return node


def _node(design, state, cohorts, truth, sizes, depth, prob) -> Dict[str, Any]:
    dec, node, c = _head(design, state, cohorts, truth, sizes, depth, prob)
    if c is None or c <= 0:  # c <= 0: a time-to-event design waiting, no cohort to branch on
        return node
    for y in range(c + 1):
        p_y = None
        if truth is not None:
            p = truth[dec.dose]
            p_y = math.comb(c, y) * p ** y * (1.0 - p) ** (c - y)
        child = _node(design, state.add_cohort(dec.dose, c, y), cohorts, truth, sizes,
                      depth + 1, prob * p_y if p_y is not None else 1.0)
        child["outcome"] = f"{dec.dose + 1}" + "T" * y + "N" * (c - y)
        if p_y is not None:
            child["p_outcome"] = p_y
        node["children"].append(child)
    return node


def leaves(tree: Dict[str, Any], prefix: str = "") -> List[Tuple[str, Dict[str, Any]]]:
    """``(path, node)`` for every leaf (a stop, or the end of the cohorts asked for)."""
    out: List[Tuple[str, Dict[str, Any]]] = []

    def walk(node, path):
        if not node["children"]:
            out.append((path.strip(), node))
        for ch in node["children"]:
            walk(ch, path + " " + ch["outcome"])
    walk(tree, prefix)
    return out


def final_recommendations(tree: Dict[str, Any]) -> Dict[str, float]:
    """Probability of each final recommendation over the leaves (needs a tree built with
    ``truth``): ``"MTD k"`` / ``"no MTD"`` where the trial stopped, ``"continue at dose k"``
    where the cohorts asked for ran out first.  From no data with enough cohorts for every
    path to stop, these are the exact operating characteristics' selection probabilities."""
    out: Dict[str, float] = {}
    for _, node in leaves(tree):
        if "probability" not in node:
            raise ValueError("final recommendation probabilities need a truth")
        if node["next_dose"] is None:
            what = node.get("selects", "MTD")
            key = f"no {what}" if node.get("mtd") is None else f"{what} {node['mtd']}"
        elif node.get("cohort_size") == 0:
            key = f"suspend at dose {node['next_dose']}"
        else:
            key = f"continue at dose {node['next_dose']}"
        out[key] = out.get(key, 0.0) + node["probability"]
    return dict(sorted(out.items()))


def paths_csv(tree: Dict[str, Any], prefix: str = "") -> str:
    """One row per node: its path of outcomes, depth, the data, the decision and (with a
    truth) its probability."""
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    has_p = "probability" in tree
    w.writerow(["path", "depth", "n", "dlt", "next_dose", "cohort_size", "stop_reason", "mtd",
                "leaf"] + (["probability"] if has_p else []))

    def walk(node, path, depth):
        w.writerow([path.strip(), depth, " ".join(map(str, node["n"])),
                    " ".join(map(str, node["dlt"])),
                    "" if node["next_dose"] is None else node["next_dose"],
                    "" if node["cohort_size"] is None else node["cohort_size"],
                    node["stop_reason"] or "", "" if node.get("mtd") is None else node["mtd"],
                    int(not node["children"])]
                   + ([repr(float(node["probability"]))] if has_p else []))
        for ch in node["children"]:
            walk(ch, path + " " + ch["outcome"], depth + 1)
    walk(tree, prefix, 0)
    return buf.getvalue()


def paths_dot(tree: Dict[str, Any], labels: List[str], prefix: str = "") -> str:
    """The tree in Graphviz DOT: one node per decision, edges labelled by the outcome (and
    its probability with a truth)."""
    lines = ["digraph dose_paths {", '  node [shape=box, fontname="Helvetica"];']
    counter = [0]

    def label(node):
        if node["next_dose"] is None:
            m = node.get("mtd")
            text = (f"stop\\n{node.get('selects', 'MTD')}: "
                    + ("none" if m is None else labels[m - 1]))
        else:
            text = f"dose {node['next_dose']} ({labels[node['next_dose'] - 1]})"
        if "probability" in node:
            text += f"\\np = {node['probability']:.4f}"
        return text.replace('"', "'")

    def walk(node):
        me = counter[0]
        counter[0] += 1
        lines.append(f'  n{me} [label="{label(node)}"];')
        for ch in node["children"]:
            child = walk(ch)
            edge = ch["outcome"] + (f" ({ch['p_outcome']:.3f})" if "p_outcome" in ch else "")
            lines.append(f'  n{me} -> n{child} [label="{edge}"];')
        return me
    root_label = prefix.strip() or "(no patients)"
    lines.append(f'  label="after {root_label}"; labelloc=t;')
    walk(tree)
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_paths(tree: Dict[str, Any], labels: List[str], prefix: str = "") -> str:
    lines: List[str] = []

    def describe(node):
        if node["next_dose"] is None:
            m = node.get("mtd")
            return f"stop ({node['stop_reason']}), {node.get('selects', 'MTD')}: " + (
                "none" if m is None else f"dose {m} ({labels[m - 1]})")
        return f"dose {node['next_dose']} ({labels[node['next_dose'] - 1]})"

    def prob(node):
        return f"  [p = {node['probability']:.4f}]" if "probability" in node else ""

    lines.append(f"after {prefix.strip() or '(no patients)'}: {describe(tree)}")

    def walk(node, path, depth):
        for ch in node["children"]:
            p = (path + " " + ch["outcome"]).strip()
            lines.append("  " * depth + f"{ch['outcome']:<8} -> {describe(ch)}{prob(ch)}")
            walk(ch, p, depth + 1)

    walk(tree, prefix, 1)
    return "\n".join(lines)
