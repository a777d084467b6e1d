"""The fast path for classic designs with issue 14's conduct options: :class:`ConductTrial`.

:class:`~.backfill.ConductPolicy` / :class:`~.backfill.BackfillPolicy` (backfill cohorts,
short products under every counting policy, the review committee's ``review`` /
``review_every_days``, ``cohort_sizes``) flattened into the lean
:class:`~.fast.ClassicTrial` loop, with ``conduct.costs`` read from the trial as the parts
do, and ``screen_while_paused: false`` (:class:`PausedClassicTrial`,
:class:`PausedConductTrial`).  Same calls in the same order with the same day arithmetic as
the parts on simpy, so the same trials bit for bit (tests/test_fastcal.py: random conduct
blocks with these options, every classic design, scenarios/cart_backfill.yaml).

What differs from the parts is only how the work is done:

* the highest dose open for backfill (:func:`~.backfill.backfill_dose`) is kept until
  something it reads changes (an enrolment, a loss, a completed window, a new escalation
  dose), instead of being recomputed at every arrival;
* a decision (``ConductPolicy.decide_now``: the design on the pooled state, BF-BOIN's
  conflict rule, ``max_n`` on escalation patients) is memoised per design across calls, keyed
  by the pooled counts, the last cohort and the escalation patients so far (it is a pure
  function of them), with the :class:`~escalation_sim.types.TrialState` it was made on;
* short products: each patient's received fraction is read from the shortfall stream's
  pre-drawn row (:meth:`~.shortfall.ShortfallModel.draws`), its counting level once at
  enrolment.
"""
from __future__ import annotations

from bisect import bisect_right
from heapq import heappush
from operator import itemgetter

import numpy as np

from ...types import Decision, StopReason, TrialState
from ...designs.interval import DE_ESCALATE
from ...designs.rules import StopAtN
from .backfill import bf_conflict, review_delay
from .draws import block_sizes, patient_draws
from .fast import (_BF, _CACT, _CDONE, _CDOSE, _CFREE, _CNT, _CO, _CSIZE, _DOSE, _ENR, _INF,
                   _J, _RECV, _ST, ClassicTrial, LeanChunkDraws, design_memo)
from .shortfall import STREAM, ShortfallDraws, dlt_rate_at, fractions_from_uniforms
from ...randomness import stream_key, uniforms

_by_infusion = itemgetter(_INF, _J)      # fast._inf_order, in C
#: entries of one decision memo before it starts afresh
_MEMO_MAX = 500_000


class _PatView:
    """What ``cost_columns`` reads of a lean patient."""

    __slots__ = ("j", "enrolled_day", "infusion_day", "status", "dose")

    def __init__(self, p):
        self.j = p[_J]
        self.enrolled_day = p[_ENR]
        self.infusion_day = p[_INF]
        self.status = p[_ST]
        self.dose = p[_DOSE]


class ConductTrial(ClassicTrial):
    """A classic-design trial under ``ConductPolicy`` / ``BackfillPolicy`` on the lean loop
    (module docstring); ``policy`` is the trial itself (``conduct_columns`` reads the
    counts from it)."""

    __slots__ = ("bf", "sf", "frac", "sfd", "rules", "n_esc", "y_esc", "n_bf", "y_bf",
                 "assigned", "bf_active", "side", "bf_cohorts", "max_n", "n_short",
                 "n_excluded", "n_bf_enrolled", "n_bf_treated", "last", "sizes", "n_cohorts",
                 "state", "esc", "cands", "dmemo", "review", "review_days", "every",
                 "amounts", "ptrue", "costs", "n_pool", "y_pool", "bf_cap", "bf_max",
                 "bf_min", "plain_review", "cmemo", "bf_dose")

    def __init__(self, setup, draws, lean=None):
        super().__init__(setup, draws, None if lean is None else lean[:4])
        c = setup.conduct
        K = setup.K
        self.bf = c.backfill
        self.sf = sf = setup.shortfall
        self.sfd = None                  # the shortfall stream's ShortfallDraws, if needed
        self.frac = None
        if sf is not None:
            self.amounts = sf.amounts
            if lean is not None and lean[4] is not None:
                self.frac = lean[4]      # pre-drawn by LeanConductChunkDraws
            else:
                self.sfd = sf.draws(draws.plan.seed, draws.trial)
                self.frac = self.sfd.frac
        self.ptrue = setup.p
        self.rules = setup.backfill_rules
        self.n_esc = [0] * K
        self.y_esc = [0] * K
        self.n_bf = [0] * K
        self.y_bf = [0] * K
        self.assigned = [0] * K
        self.bf_active = 0
        self.side = None
        self.bf_cohorts = [None] * K
        design = setup.design
        self.max_n = design.n if isinstance(design, StopAtN) else None
        self.n_short = 0
        self.n_excluded = 0
        self.n_bf_enrolled = 0
        self.n_bf_treated = 0
        self.last = None
        self.sizes = c.cohort_sizes
        self.n_cohorts = 0
        self.state = setup.empty_state
        self.esc = 0                     # escalation patients evaluable (counted)
        # backfill: the doses below the escalation dose whose data open them (rules 1-3 of
        # backfill.py), highest first, recomputed when the data or that dose change (None)
        self.cands = None
        self.n_pool = [0] * K            # escalation + backfill, per counted level
        self.y_pool = [0] * K
        bf = self.bf
        if bf is not None:
            self.cmemo = self.rules.memo         # Rules.classify's memo
            self.bf_cap = bf.max_per_dose
            self.bf_max = bf.max_total
            self.bf_min = bf.min_evaluable
        self.review = c.review
        self.plain_review = c.review is None and c.review_every_days is None
        self.review_days = c.review_days
        self.every = c.review_every_days
        memo = setup.__dict__.get("_fast_conduct_memo")     # (this call's trials)
        if memo is None or len(memo) > _MEMO_MAX:
            shared = design_memo(setup)
            name = "conduct_bf" if self.bf is not None else "conduct"
            memo = shared.get(name)
            if memo is None or len(memo) > _MEMO_MAX:
                memo = shared[name] = {}
            setup._fast_conduct_memo = memo
        self.dmemo = memo
        self.costs = c.costs is not None
        # patients enrolled before _enroll must check its limits (the guard, the drawn
        # patients, the drawn short-product fractions)
        self.jlim = min(setup.max_patients, len(draws.fail_at),
                        len(self.frac) if self.frac is not None else len(draws.fail_at))

    conduct_fields = True

    @property
    def policy(self):
        """What ``conduct_columns`` reads the counts from (as the parts' ``trial.policy``)."""
        return self


    def release(self) -> None:
        super().release()
        self.side = None
        self.bf_cohorts = None
        if self.costs:                 # what cost_columns reads
            self.pats = [_PatView(p) for p in self.pats]

    # ---------------------------------------------------------------- decisions
    def _start(self):
        s = self.setup
        self._open(self._sized(s.decide(s.empty_state)))

    def _decide_now(self, key):
        """``ConductPolicy.decide_now`` on the state of ``key`` (memoised): ``(state,
        decision)``."""
        hit = self.dmemo.get(key)
        if hit is not None:
            return hit
        st = TrialState(*key[:5])
        s = self.setup
        if self.bf is None:
            dec = s.decide(st)
        else:
            esc = key[5]
            max_n = self.max_n
            if max_n is not None and esc >= max_n:
                dec = Decision.halt(StopReason.MAX_N, f"{esc} escalation patients treated "
                                                      f"(max {max_n})")
            else:
                cm = s.conduct_memo
                dec = cm.get(st)
                if dec is None:
                    base = s.design.base if max_n is not None else s.design
                    dec = cm[st] = base.decide(st)
                dec = bf_conflict(self.rules, st, dec)
                if max_n is not None and not dec.stop and dec.cohort_size > max_n - esc:
                    dec = Decision(dec.dose, max_n - esc, dec.reason, None, dec.estimates)
        hit = self.dmemo[key] = (st, dec)
        return hit

    def _key(self, cur, last_n, last_y):
        return (tuple(self.n_pool), tuple(self.y_pool), cur, last_n, last_y, self.esc)

    def _review_delay(self, now, escalating):
        return review_delay(self.review, self.review_days, self.every, now, escalating)

    def _sized(self, dec):
        sizes = self.sizes
        if sizes is None or dec.stop:
            return dec
        size = sizes[min(self.n_cohorts, len(sizes) - 1)]
        self.n_cohorts += 1
        if self.max_n is not None:
            size = min(size, self.max_n - self.esc)
        if size == dec.cohort_size:
            return dec
        return Decision(dec.dose, size, dec.reason, None, dec.estimates)

    def _complete(self, c):
        members, c[_CDONE] = c[_CDONE], []
        members.sort(key=_by_infusion)
        d = self.draws
        u = d.dlt_u
        ptrue = self.ptrue
        dose = c[_CDOSE]
        k = self.n_tox
        n_esc, y_esc = self.n_esc, self.y_esc
        n_pool, y_pool = self.n_pool, self.y_pool
        y = 0
        if k + len(members) > len(u):
            while k + len(members) > len(u):
                d.more_evaluable()
            u = d.dlt_u
        for pat in members:
            f = pat[_RECV]
            lvl = pat[_CNT]
            n_esc[lvl] += 1
            n_pool[lvl] += 1
            if u[k] < (ptrue[dose] if f >= 1.0 else
                       dlt_rate_at(self.amounts[dose] * f, self.amounts, ptrue)):
                y_esc[lvl] += 1
                y_pool[lvl] += 1
                y += 1
            k += 1
        self.n_tox = k
        size = c[_CSIZE]
        esc = self.esc = self.esc + size
        self.cands = None
        self.last = (dose, size, y)
        key = (tuple(n_pool), tuple(y_pool), dose, size, y, esc)
        hit = self.dmemo.get(key)
        if hit is None:
            hit = self._decide_now(key)
        st, dec = hit
        self.state = st
        now = self.now
        if self.plain_review:
            delay = (now + self.review_days) - now        # as review_delay computes it
        else:
            nxt = dec.dose
            delay = self._review_delay(now, nxt is not None and nxt > dose)
        if delay > 0:
            n = self.seq = self.seq + 1
            heappush(self.q, (now + delay, n, self.h_decide, None))
        else:
            self._open_dec(dec)

    def _decide(self, _):
        # after a review: the data now (backfill windows may have closed meanwhile; without
        # backfill the same state, so the memo gives the decision made at completion)
        st, dec = self._decide_now(self._key(*self.last))
        self.state = st
        self._open_dec(dec)

    def _final_state(self):
        return self.state

    # ---------------------------------------------------------------- backfill slots
    def _candidates(self):
        """The doses below the escalation dose open by their data (backfill.py's rules 1-3:
        evaluable patients, not too toxic alone or pooled with the next dose, closure
        monotone), highest first: ``backfill_dose`` without its capacity rules 4-5."""
        cur = self.cohort[_CDOSE]
        n_pool, y_pool = self.n_pool, self.y_pool
        memo = self.cmemo
        classify = self.rules.classify
        K = len(n_pool)
        need = self.bf_min
        out = []
        for b in range(cur):
            n = n_pool[b]
            if n == 0:
                continue
            y = y_pool[b]
            v = memo.get((n, y))
            if v is None:
                v = classify(n, y)
            if v <= DE_ESCALATE:                  # Rules.too_toxic
                if b + 1 >= K:
                    break
                n2 = n + n_pool[b + 1]
                if n2 == n:
                    break
                y2 = y + y_pool[b + 1]
                v = memo.get((n2, y2))
                if v is None:
                    v = classify(n2, y2)
                if v <= DE_ESCALATE:
                    break
            if n >= need:
                out.append(b)
        out.reverse()
        self.cands = out
        return out

    def _room(self):
        """Whether a dose is open for backfill now (``backfill_dose`` not None: the highest
        candidate with room, rules 4-5, kept in ``bf_dose``)."""
        if self.bf is None or self.finished or self.bf_active >= self.bf_max:
            return False
        cands = self.cands
        if cands is None:
            cands = self._candidates()
        assigned = self.assigned
        cap = self.bf_cap
        for b in cands:
            if assigned[b] < cap:
                self.bf_dose = b
                return True
        return False

    #: ``BackfillPolicy.decides_on_arrival``: a dose open for backfill keeps arrivals coming
    on_arrival = property(_room)

    def _open_slot(self):
        """``BackfillPolicy.open_slot``: a slot at the highest dose open for backfill
        (``bf_dose``: asked right after ``on_arrival`` found it)."""
        b = self.bf_dose
        c = self.bf_cohorts[b]
        if c is None:
            c = self.bf_cohorts[b] = [-2, b, 0, 0, 0, None]
        c[_CSIZE] += 1
        c[_CFREE] += 1
        self.side = c
        return True

    # ---------------------------------------------------------------- patients
    def _extend(self, j):
        """Patient ``j`` is past a limit: the guard, or the drawn patients or short-product
        fractions (drawn further, the same streams)."""
        s, d = self.setup, self.draws
        patient_draws(d, j, s.max_patients)
        frac = self.frac
        if frac is not None:
            if j >= len(frac):
                sfd = self.sfd
                if sfd is None:          # past the pre-drawn row: the stream's next draws
                    sfd = self.sfd = ShortfallDraws(self.sf.spec, d.plan.seed, d.trial, frac)
                sfd.fraction(j)
                frac = self.frac = sfd.frac
            self.jlim = min(s.max_patients, len(d.fail_at), len(frac))
        else:
            self.jlim = min(s.max_patients, len(d.fail_at))

    def _lost(self, pat):
        self._count_loss(pat)
        c = pat[_CO]
        c[_CACT] -= 1
        # ConductPolicy.on_lost
        self.assigned[pat[_DOSE]] -= 1
        if pat[_BF]:
            self.bf_active -= 1
            c[_CSIZE] -= 1
        else:
            c[_CFREE] += 1
        if not self.finished:
            self._fill()




class LeanConductChunkDraws(LeanChunkDraws):
    """:class:`~.fast.LeanChunkDraws` plus each trial's short-product fractions for its first
    ``n_patients`` patients, drawn for the whole chunk in one vectorised call with
    :meth:`~.shortfall.ShortfallModel.draws`' formula (the shortfall stream, draws ``2 j``
    and ``2 j + 1``: the numbers depend on (seed, trial, j) only, so a trial that enrols
    more continues the same stream through :class:`~.shortfall.ShortfallDraws`).  Blocks are
    sized for about half the backfill cap (:meth:`block_sizes`; any size gives the same
    numbers, a trial that needs more extends its own)."""

    def __init__(self, plan, trials, n_arrivals, n_patients, n_evaluable):
        super().__init__(plan, trials, n_arrivals, n_patients, n_evaluable)
        spec = plan.conduct.shortfall
        self.frac = None
        if spec is not None:
            t = self.trials[:, None]
            u = uniforms(stream_key(plan.seed, STREAM), t,
                         np.arange(2 * n_patients, dtype=np.uint64)[None, :])
            short = u[:, 0::2] < spec.prob
            self.frac = np.where(short, fractions_from_uniforms(spec, u[:, 1::2]),
                                 1.0).tolist()

    @staticmethod
    def block_sizes(conduct, max_n, sizes):
        """The engine's block ``sizes`` (:func:`~.draws.block_sizes`), with the patient and
        evaluable blocks made for half of ``backfill.max_total`` (at most ``max_n``) on top
        of ``max_n`` instead of all of it (never larger than given): on the seed scenario
        with {max_per_dose: 12, max_total: 24} the trials enrol 33.5 patients on average
        (99th percentile 42), so blocks for 48 evaluable patients drew a third more than
        used.  Those numbers are per patient, so any block size gives the same ones.  The
        arrival block keeps the engine's size: an arrival day is a cumulative sum of gaps,
        and a trial extending its block continues the sum from its last day
        (``TrialDraws.more_arrivals``), which can differ from a longer block's sum in the
        last bit."""
        bf = conduct.backfill
        if bf is None or max_n is None:
            return sizes
        half = conduct.model_copy(update={"backfill": bf.model_copy(
            update={"max_total": max(1, min(bf.max_total, max_n) // 2)})})
        _, npat, ne = block_sizes(half, max_n)
        return sizes[0], min(npat, sizes[1]), min(ne, sizes[2])

    def trial(self, r: int):
        d, lean = super().trial(r)
        return d, lean + (None if self.frac is None else self.frac[r],)


# ------------------------------------------------------------------ screen_while_paused
class _Pauses:
    """``screen_while_paused: false`` for the lean classic trials (as :class:`~.accrual.
    Accrual`'s ``pauses``, ``mark`` and ``unscreened``): the days the paused state changes
    are recorded where the parts record them (after an offer, after a refill: the arming that
    follows changes nothing they read), an eligible arrival that falls in a pause is dropped
    unscreened whether an event or ``catch_up`` meets it, and the counts at the close leave
    out every arrival during a pause."""

    __slots__ = ()

    pausing = True

    def _init_pauses(self):
        self.pauses = [(0.0, False)]

    def _mark(self, now):
        paused = self.cohort[_CFREE] <= 0 and not self.on_arrival
        if paused != self.pauses[-1][1]:
            self.pauses.append((now, paused))

    def _paused_at(self, day):
        p = self.pauses
        k = bisect_right(p, (day, True)) - 1
        return p[k][1] if k >= 0 else False

    def _arrival_day(self, i):
        rows = self.arr_rows
        if rows is not None:
            return float(rows[0][i])
        return self.draws.arrival_time[i]

    def _unscreened(self, i):
        if not self._paused_at(self._arrival_day(i)):
            return False
        self.accrual.n_not_screened += 1
        return True

    def _ready(self, i):
        if not self.finished and self._unscreened(i):
            self.armed = False
            self._arm()
            return
        was = self.finished
        super()._ready(i)
        if not was and not self.finished:
            self._mark(self.now)

    def _fill(self):
        super()._fill()
        if not self.finished:
            self._mark(self.now)

    def _count_arrivals(self, t_end):
        super()._count_arrivals(t_end)
        acc = self.accrual
        self._lists()
        d = self.draws
        off = [i for i in range(acc.n_arrived) if self._paused_at(d.arrival_time[i])]
        acc.n_not_screened = len(off)
        acc.n_screened -= len(off)
        acc.n_screen_failed -= sum(d.screen_failed[i] for i in off)


class PausedClassicTrial(_Pauses, ClassicTrial):
    """:class:`~.fast.ClassicTrial` with ``screen_while_paused: false``."""

    __slots__ = ("pauses",)

    def __init__(self, setup, draws, lean=None):
        super().__init__(setup, draws, lean)
        self._init_pauses()


class PausedConductTrial(_Pauses, ConductTrial):
    """:class:`ConductTrial` with ``screen_while_paused: false`` (accrual is not paused
    while a backfill dose is open: ``BackfillPolicy.decides_on_arrival``)."""

    __slots__ = ("pauses",)

    def __init__(self, setup, draws, lean=None):
        super().__init__(setup, draws, lean)
        self._init_pauses()
