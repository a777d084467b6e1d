"""Dose paths: every possible course of the next k cohorts from the current data.

Each node holds the decision at that point; its children are the cohort's possible outcomes
(``"NNN"``, ``"NNT"``, ... grouped by number of DLTs, since designs see counts).  Used for
protocol appendices ("if the next cohort has 1 DLT we will ...").
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..designs.base import Design
from ..types import TrialState


def dose_paths(design: Design, state: TrialState, cohorts: int,
               truth: Optional[Sequence[float]] = None,
               cohort_sizes: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Nested dict: ``{"n": [...], "dlt": [...], "next_dose", "cohort_size", "stop_reason",
    "reason", "children": [...]}`` (doses 1-based; a stopped node adds ``"mtd"``).

    ``truth`` (true DLT rate per dose): every node gets ``"probability"``, the chance of
    reaching it from the root, and each child ``"p_outcome"``, the binomial chance of its
    cohort's outcome (all orders of the letters together).  ``cohort_sizes``: the size of
    each of the next cohorts (overriding the design's; ``cohorts`` is then its length)."""
    from ..designs.base import Outcome
    if design.outcome is not Outcome.BINARY_DLT:
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
    return _node(design, state, cohorts, truth, sizes, 0, 1.0)


def _node(design, state, cohorts, truth, sizes, depth, prob) -> Dict[str, Any]:
    dec = design.decide(state)
    node: Dict[str, Any] = {
        "n": list(state.n), "dlt": list(state.y),
        "next_dose": None if dec.stop else dec.dose + 1,
        "cohort_size": None if dec.stop else dec.cohort_size,
        "stop_reason": dec.stop_reason.value if dec.stop_reason else None,
        "reason": dec.reason, "children": []}
    if truth is not None:
        node["probability"] = prob
    if dec.stop:
        m = design.select_mtd(state)
        node["mtd"] = None if m is None else m + 1
        return node
    if depth >= cohorts:
        return node
    c = dec.cohort_size if sizes is None else sizes[depth]
    if sizes is not None:
        node["cohort_size"] = c
    if c <= 0:  # a time-to-event design waiting: no cohort to branch on
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
            key = "no MTD" if node.get("mtd") is None else f"MTD {node['mtd']}"
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
            text = "stop\\nMTD: " + ("none" if m is None else labels[m - 1])
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
            return f"stop ({node['stop_reason']}), MTD: " + (
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
