"""Merging chunk results, in any order, into per-design results."""
from __future__ import annotations

import numpy as np

from ..results.oc import OutcomeTally
from ..results.tables import DesignResult


class ChunkMerger:
    """Merges ``ChunkResult`` objects, in any order, into per-design results.

    Integer tallies and paired sums (integers, or exact fractions for real-valued metrics
    such as DES durations) are added as chunks arrive, so memory does not grow with the
    number of chunks and the totals do not depend on the chunking or the order the chunks
    finished in; fractions are rounded to float once, at the end.  Per-trial arrays (DES
    durations, kept trials) are concatenated in trial order.  ``keep_trials=False`` drops
    the kept per-trial rows of the chunks (a run streaming them to disk instead).
    """

    def __init__(self, n_doses: int, n_designs: int, keep_trials: bool = True):
        self.keep_trials = keep_trials
        self.tallies = [OutcomeTally(n_doses) for _ in range(n_designs)]
        self.n_trials = 0
        self._sums: dict = {}         # pair -> metric -> [s, ss], exact
        self._per_trial: dict = {}    # start -> (durations, des_stats, trials)

    def add(self, ch) -> None:
        self.n_trials += ch.stop - ch.start
        for i, t in enumerate(ch.tallies):
            self.tallies[i].merge(t)
        for pair, sums in ch.pair_sums.items():
            for m, (s, ss) in sums.items():
                acc = self._sums.setdefault(pair, {}).setdefault(m, [0, 0])
                acc[0] += s
                acc[1] += ss
        trials = ch.trials if self.keep_trials else None
        if ch.durations is not None or trials is not None:
            self._per_trial[ch.start] = (ch.durations, ch.des_stats, trials)

    def pair_sums(self) -> dict:
        def num(v):
            return v if isinstance(v, int) else float(v)
        return {pair: {m: [num(s), num(ss)] for m, (s, ss) in sums.items()}
                for pair, sums in self._sums.items()}

    def design_results(self, items) -> list:
        parts = [self._per_trial[k] for k in sorted(self._per_trial)]
        results = []
        for i, it in enumerate(items):
            durs = [p[0][i] for p in parts if p[0] is not None]
            stats = [p[1][i] for p in parts if p[1] is not None]
            trial_parts = [p[2][i] for p in parts if p[2] is not None]
            dur = np.concatenate(durs) if durs else None
            totals = {}
            if stats:
                for k in stats[0]:
                    v = np.concatenate([np.asarray(s[k], dtype=float) for s in stats])
                    if v.ndim == 1 and v.size == self.n_trials:
                        totals["mean_" + k] = float(v.mean())
            trials = None
            if trial_parts:
                trials = {k: np.concatenate([p[k] for p in trial_parts]) for k in trial_parts[0]}
            results.append(DesignResult(it.name, it.type, self.tallies[i], dur, totals, trials))
        return results
