"""Dose paths: every possible course of the next k cohorts from the current data.

Each node holds the decision at that point; its children are the cohort's possible outcomes
(``"NNN"``, ``"NNT"``, ... grouped by number of DLTs, since designs see counts).  Used for
protocol appendices ("if the next cohort has 1 DLT we will ...").
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..designs.base import Design
from ..types import TrialState


def dose_paths(design: Design, state: TrialState, cohorts: int) -> Dict[str, Any]:
    """Nested dict: ``{"n": [...], "dlt": [...], "decision": {...}, "children": [...]}``."""
    dec = design.decide(state)
    node: Dict[str, Any] = {
        "n": list(state.n), "dlt": list(state.y),
        "next_dose": None if dec.stop else dec.dose + 1,
        "cohort_size": None if dec.stop else dec.cohort_size,
        "stop_reason": dec.stop_reason.value if dec.stop_reason else None,
        "reason": dec.reason, "children": []}
    if dec.stop:
        m = design.select_mtd(state)
        node["mtd"] = None if m is None else m + 1
        return node
    if cohorts <= 0:
        return node
    for y in range(dec.cohort_size + 1):
        child = dose_paths(design, state.add_cohort(dec.dose, dec.cohort_size, y), cohorts - 1)
        child["outcome"] = f"{dec.dose + 1}" + "T" * y + "N" * (dec.cohort_size - y)
        node["children"].append(child)
    return node


def format_paths(tree: Dict[str, Any], labels: List[str], prefix: str = "") -> str:
    lines: List[str] = []

    def describe(node):
        if node["next_dose"] is None:
            m = node.get("mtd")
            return f"stop ({node['stop_reason']}), MTD: " + (
                "none" if m is None else f"dose {m} ({labels[m - 1]})")
        return f"dose {node['next_dose']} ({labels[node['next_dose'] - 1]})"

    lines.append(f"after {prefix.strip() or '(no patients)'}: {describe(tree)}")

    def walk(node, path, depth):
        for ch in node["children"]:
            p = (path + " " + ch["outcome"]).strip()
            lines.append("  " * depth + f"{ch['outcome']:<8} -> {describe(ch)}")
            walk(ch, p, depth + 1)

    walk(tree, prefix, 1)
    return "\n".join(lines)
