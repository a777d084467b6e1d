"""Time-free engines: the memoised state graph and the vectorised cohort simulator."""
from .graph import StateGraph, graph_for
from .cohort import simulate_cohort_chunk

__all__ = ["StateGraph", "graph_for", "simulate_cohort_chunk"]
