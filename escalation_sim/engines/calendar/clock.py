"""The calendar a trial runs on: simpy's environment plus one cheap way to schedule a call.

The trial's parts never touch simpy directly; they use four things of a clock:

* ``now``: the current day;
* ``after(delay, fn, arg)``: ``delay`` days from now, call ``fn(call)`` where ``call.arg``
  is ``arg``;
* ``run()`` until ``stop()`` is called, and ``close()`` to drop what is still queued.

Calls happen in the order of ``(day, order of scheduling)`` -- simpy's order for timeouts:
a key ``(now + delay, NORMAL, event id)`` on a heap.  A clock that keeps this order (a plain
heap loop without simpy, say) runs every trial identically, so an alternative clock is a
drop-in part (:class:`~escalation_sim.engines.calendar.model.Setup` takes the clock class).

``after`` is the hot path (one per event): it pushes a slim event with the very key
:meth:`simpy.Environment.schedule` would use, instead of ``env.timeout`` plus a callback (a
``Timeout`` built with argument checks, a second call, the ``value`` property): about a
third less per scheduled-and-fired event, measured.  The handler receives the event itself
(one Python call per event, no dispatcher).  This relies on three attributes of
``simpy.Environment`` (``_now``, ``_queue``, ``_eid``), stable since simpy 4.0;
``tests/test_des.py`` checks the order against ``env.timeout``.
"""
from __future__ import annotations

from heapq import heappush
from typing import Any, Callable

import simpy
from simpy.events import NORMAL, Event

_new = object.__new__


class Call(Event):
    """A scheduled call: simpy calls each of ``callbacks`` with it; ``arg`` is the payload.
    Built without ``Event.__init__`` (no ``env``: simpy's loop does not need it)."""

    _ok = True          # read by simpy's step(): the event succeeded
    _value = None


class SimpyClock(simpy.Environment):
    """A simpy environment with ``after``, ``run`` until ``stop``, and ``close``."""

    def __init__(self) -> None:
        super().__init__()
        self._end = self.event()

    def after(self, delay: float, fn: Callable[[Call], Any], arg: Any = None) -> None:
        """In ``delay`` (>= 0) days, call ``fn(call)`` with ``call.arg == arg``."""
        ev = _new(Call)
        ev.callbacks = [fn]
        ev.arg = arg
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), ev))

    def run(self) -> None:  # type: ignore[override]
        """Process events until :meth:`stop` (simpy raises if the queue empties first)."""
        super().run(until=self._end)

    def stop(self) -> None:
        """End the run: calls already scheduled for this instant still happen, then it
        stops."""
        if not self._end.triggered:
            self._end.succeed()

    def close(self) -> None:
        """Drop the events still queued (the next arrival, windows running past the final
        decision): they hold bound methods of the trial, i.e. reference cycles."""
        self._queue.clear()
