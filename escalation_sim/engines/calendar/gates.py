"""Hold points on a patient's path: the gate before lymphodepletion, and the review before a
decision.

The :class:`Gate` sits before the first lymphodepletion phase by default
(``gate_before_phase``).  A patient reaching it joins a first-in-first-out queue; it is
admitted while fewer than ``max_in_followup`` patients are between gate release and the end
of their path (the follow-up cap, :class:`Gate.cap`), and once admitted it is released on
the day its :class:`Spacing` rule allows (sentinel / staggered dosing).  Spacing rules:

* :class:`SentinelSpacing` (``stagger_mode: sentinel``): the first patient of a group (a
  dose, or each cohort with ``stagger_scope: every_cohort``) is infused alone; the others
  not before ``stagger_days`` after it.
* :class:`SequentialSpacing` (``stagger_mode: all``): every infusion of a group at least
  ``stagger_days`` after the previous one.

A :class:`FixedReview` delays each classic decision by ``review_days`` after the cohort's
last window closes.
"""
from __future__ import annotations

from collections import deque
from operator import attrgetter
from typing import TYPE_CHECKING, Dict, Optional

from .patient import Patient

if TYPE_CHECKING:  # pragma: no cover
    from .trial import Trial

_by_dose = attrgetter("dose")
_by_cohort = attrgetter("cohort.index")


class Spacing:
    """Earliest infusion day of a patient of a group, given the earlier ones."""

    __slots__ = ("days", "key", "seen")

    def __init__(self, days: float, every_cohort: bool):
        self.days = days
        self.key = _by_cohort if every_cohort else _by_dose
        self.seen: Dict[int, float] = {}

    def release_day(self, pat: Patient, now: float, post: float) -> float:
        """Day to release ``pat`` admitted ``now``; ``post``: its days from gate to infusion."""
        raise NotImplementedError


class SentinelSpacing(Spacing):
    """Others wait until ``days`` after the group's first infusion (``seen``: that day)."""

    __slots__ = ()

    def release_day(self, pat: Patient, now: float, post: float) -> float:
        key = self.key(pat)
        first = self.seen.get(key)
        if first is None:
            self.seen[key] = now + post
            return now
        return max(now, first + self.days - post)


class SequentialSpacing(Spacing):
    """Each infusion ``days`` after the group's previous one (``seen``: the last one)."""

    __slots__ = ()

    def release_day(self, pat: Patient, now: float, post: float) -> float:
        key = self.key(pat)
        last = self.seen.get(key)
        if last is None:
            self.seen[key] = now + post
            return now
        release = max(now, last + self.days - post)
        self.seen[key] = release + post
        return release


class Gate:
    """The hold point: a queue, the follow-up cap and the spacing rule.

    ``known_release`` (sentinel spacing, no binding cap): once a group's sentinel has been
    released, the release day of a later patient of that group is known at enrollment, so
    :meth:`enter` schedules the rest of its path at once instead of two gate events.
    """

    __slots__ = ("trial", "cap", "spacing", "known_release", "queue", "in_followup")

    def __init__(self, trial: "Trial", cap: Optional[int], spacing: Optional[Spacing],
                 known_release: bool):
        self.trial = trial
        self.cap = cap
        self.spacing = spacing
        self.known_release = known_release and isinstance(spacing, SentinelSpacing)
        self.queue: deque = deque()
        self.in_followup = 0                  # released and path not ended

    def enter(self, pat: Patient) -> None:
        """``pat`` was just enrolled and will reach the gate (no failure before it)."""
        t = self.trial
        d = t.draws
        j = pat.j
        if self.known_release:
            sp = self.spacing
            first = sp.seen.get(sp.key(pat))
            if first is not None:      # the group's sentinel is on its way
                now = t.clock.now
                gate = now + d.pre_days[j]
                release = max(gate, first + sp.days - d.post_days[j])
                pat.gate_day = gate
                pat.release_day = release
                self.in_followup += 1
                t.path.after_gate(pat, release - now)
                return
        t.clock.after(d.pre_days[j], self._arrive, pat)

    def _arrive(self, call) -> None:
        pat: Patient = call.arg
        pat.gate_day = self.trial.clock.now
        self.queue.append(pat)
        self.admit()

    def admit(self) -> None:
        """Admit queued patients while the cap allows; release each on its spacing day."""
        q = self.queue
        cap = self.cap
        t = self.trial
        sp = self.spacing
        while q and (cap is None or self.in_followup < cap):
            pat = q.popleft()
            self.in_followup += 1
            now = t.clock.now
            release = now
            if sp is not None:
                release = sp.release_day(pat, now, t.draws.post_days[pat.j])
            pat.release_day = release
            if release > now:
                t.clock.after(release - now, self._release, pat)
            else:
                t.path.after_gate(pat, 0.0)

    def _release(self, call) -> None:
        self.trial.path.after_gate(call.arg, 0.0)

    def leave(self) -> None:
        """A released patient's path ended: a follow-up place frees up."""
        self.in_followup -= 1
        if self.queue:
            self.admit()


class FixedReview:
    """A safety review ``days`` long after each completed cohort, before the decision."""

    __slots__ = ("days",)

    def __init__(self, days: float):
        self.days = days

    def delay(self, now: float) -> float:
        """Days from ``now`` (the cohort's last window closed) to the decision."""
        return self.days
