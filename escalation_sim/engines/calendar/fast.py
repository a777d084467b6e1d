"""The calendar engine's fast path: the same trial parts on a plain heap loop (no simpy).

The simpy engine (:class:`~escalation_sim.engines.calendar.clock.SimpyClock`) stays the
reference.  :class:`HeapClock` is a drop-in clock with the four members the parts use
(``now``, ``after``, ``run``/``stop``, ``close``) and simpy's order of calls: by day, then by
order of scheduling (simpy's key ``(day, NORMAL, event id)``; ``stop`` is itself a call
scheduled now, so calls already scheduled for this instant still happen, later ones do
not).  With the same order every trial consumes the same pre-drawn numbers in the same
roles, so the two engines give the same trials bit for bit (``tests/test_fastcal.py``
compares per-trial outputs and patient logs on every bundled scenario and on random ones).

What the fast path runs is an explicit allow-list (:func:`unsupported`): the decision
policies, conduct fields and call options known when it was checked against simpy.  Any
other feature (a new conduct field set away from its default, a new policy, an extra
option) runs on simpy, with a log message on ``escalation_sim.engines.calendar`` saying why.

Engine choice: ``simulate_des_trials(..., engine=...)`` with ``"auto"`` (the fast path when
supported, the default), ``"fast"`` (the fast path or an error) or ``"simpy"``; when not
given, the environment variable ``ESCALATION_SIM_CALENDAR_ENGINE`` (``auto`` / ``simpy``,
set by the CLI's ``--calendar-engine``) decides, so worker processes follow the command.
"""
from __future__ import annotations

import os
from heapq import heappop, heappush
from typing import Any, Callable, List, Optional

from ...designs.base import Design
from ...inputs.conduct import Conduct, Phase, Screening
from ...inputs.distributions import DurationSpec

ENGINES = ("auto", "fast", "simpy")
ENV_VAR = "ESCALATION_SIM_CALENDAR_ENGINE"

_new = object.__new__


class _Call:
    """What a handler receives: ``arg`` is the payload given to ``after``."""

    __slots__ = ("arg",)


class HeapClock:
    """A plain heap of ``(day, order, fn, arg)``; see the module docstring."""

    __slots__ = ("now", "_q", "_n", "_stopped")

    def __init__(self) -> None:
        self.now = 0.0
        self._q: List[tuple] = []
        self._n = 0
        self._stopped = False

    def after(self, delay: float, fn: Callable[[Any], Any], arg: Any = None) -> None:
        """In ``delay`` (>= 0) days, call ``fn(call)`` with ``call.arg == arg``."""
        n = self._n = self._n + 1
        heappush(self._q, (self.now + delay, n, fn, arg))

    def run(self) -> None:
        """Process calls until :meth:`stop` (an error if the queue empties first, as
        simpy's ``run(until=event)``)."""
        q = self._q
        pop = heappop
        call = _new(_Call)
        while q:
            now, _, fn, arg = pop(q)
            if fn is None:                       # the stop marker
                return
            self.now = now
            call.arg = arg
            fn(call)
            call = _new(_Call)               # a handler may keep its call
        raise RuntimeError(f"No scheduled events left but the trial did not stop "
                           f"(day {self.now})")

    def stop(self) -> None:
        """End the run after the calls already scheduled for this instant."""
        if not self._stopped:
            self._stopped = True
            n = self._n = self._n + 1
            heappush(self._q, (self.now, n, None, None))

    def close(self) -> None:
        """Drop the calls still queued (they hold bound methods of the trial)."""
        self._q.clear()


# ---------------------------------------------------------------------------- allow-list
#: conduct fields the fast path was checked for, against simpy (any value)
KNOWN_CONDUCT = frozenset({
    "accrual_per_month", "screening", "max_wait_days", "when_paused", "phases",
    "gate_before_phase", "dlt_window_days", "dlt_onset", "dropout_prob", "stagger_days",
    "stagger_mode", "stagger_scope", "max_in_followup", "review_days"})
KNOWN_PHASE = frozenset({"name", "duration_days", "failure_prob", "probability", "kind"})
KNOWN_SCREENING = frozenset({"failure_prob", "duration_days"})
KNOWN_DURATION = frozenset(DurationSpec.model_fields)


def _extra_fields(model, known, label: str) -> List[str]:
    """Fields of ``model`` outside ``known`` whose value is not the field's default."""
    out = []
    fields = type(model).model_fields
    for name, f in fields.items():
        if name in known:
            continue
        default = f.get_default(call_default_factory=True)
        if getattr(model, name) != default:
            out.append(f"{label}{name}")
    extra = getattr(model, "model_extra", None) or {}
    out.extend(f"{label}{k}" for k in extra)
    return out


def unsupported(design: Design, conduct: Conduct, policy: type, **options: Any
                ) -> Optional[str]:
    """Why the fast path cannot run this call (``None``: it can).

    ``policy``: the decision policy class the simpy engine would use; ``options``: any other
    call option (only ``record_patients`` is known).  Everything outside the allow-list
    is a reason, so features added to the simpy engine later fall back to it."""
    from .policies import CohortPolicy, TimeToEventPolicy
    reasons: List[str] = []
    if policy not in (CohortPolicy, TimeToEventPolicy):
        reasons.append(f"decision policy {policy.__name__}")
    if not isinstance(conduct, Conduct):
        reasons.append(f"conduct type {type(conduct).__name__}")
    else:
        reasons += _extra_fields(conduct, KNOWN_CONDUCT, "conduct.")
        if not isinstance(conduct.screening, Screening):
            reasons.append("conduct.screening type")
        else:
            reasons += _extra_fields(conduct.screening, KNOWN_SCREENING, "conduct.screening.")
        for i, ph in enumerate(conduct.phases):
            if not isinstance(ph, Phase):
                reasons.append(f"conduct.phases[{i}] type")
                continue
            reasons += _extra_fields(ph, KNOWN_PHASE, f"conduct.phases[{i}].")
            d = ph.duration_days
            if isinstance(d, DurationSpec):
                reasons += _extra_fields(d, KNOWN_DURATION, f"conduct.phases[{i}].duration_days.")
    for k, v in options.items():
        if k != "record_patients" and v is not None:
            reasons.append(f"option {k}")
    return ", ".join(reasons) if reasons else None


def choose(engine: Optional[str]) -> str:
    """The requested engine: ``engine`` or the environment's, checked."""
    if engine is None:
        engine = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if engine not in ENGINES:
        raise ValueError(f"calendar engine must be one of {', '.join(ENGINES)} "
                         f"(got {engine!r})")
    return engine
