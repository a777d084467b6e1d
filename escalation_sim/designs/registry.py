"""Registry of design types: YAML ``type`` name -> the design's entry.

An entry is everything the rest of the package may know about a design type, so that the
scenario loader, the engines and the command line never name a design:

* ``spec_model``: the pydantic model of its YAML form;
* ``make(spec, ctx)``: the bare design; ``build`` adds the stopping rules every design takes
  (its ``rules:`` list, ``stop_n_at_dose``, then ``max_n`` from ``trial_size``) with
  :func:`with_stopping_rules`;
* ``design_class``: the class ``make`` returns; the design's class-level metadata is read from
  it: ``time_to_event`` (decides with pending patients; calendar engine only) and ``outcome``
  (what each patient contributes, :class:`~escalation_sim.designs.base.Outcome`);
* ``trial_size(spec, ctx)``: the cohort size and the sample-size cap the design takes from
  the trial (the default: the trial's, overridden by the spec; 3+3 uses cohorts of 3 and no
  cap unless its spec sets ``max_n``);
* ``table(request)``: its decision table (:mod:`escalation_sim.designs.tables`); the default
  is the next dose after each outcome of the next cohort, which fits any design;
* ``seconds_per_trial``: one core's time per trial on the time-free cohort engine, for the
  automatic choice of the number of workers (``n_jobs: auto``), when it is well above the
  engine's default figure (``run.loop.SECONDS_PER_TRIAL``); None: the default.
"""
from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Type

from .base import Design, DesignContext, DesignSpecBase, Outcome
from .rules import check_rules, with_stopping_rules

if TYPE_CHECKING:  # pragma: no cover
    from .tables import DecisionTable, TableRequest


@dataclass(frozen=True)
class TrialSize:
    """What a design takes from the trial: its cohort size and its sample-size cap (None: the
    design sets its own sample size)."""

    cohort_size: int
    max_n: Optional[int]


def trial_size_from_context(spec: DesignSpecBase, ctx: DesignContext) -> TrialSize:
    """The default: the trial's cohort size and max_n, each overridden by the spec."""
    c = spec.context(ctx)
    return TrialSize(cohort_size=c.cohort_size, max_n=c.max_n)


@dataclass(frozen=True)
class DesignEntry:
    type: str
    spec_model: Type[DesignSpecBase]
    make: Callable[[DesignSpecBase, DesignContext], Design]
    design_class: Type[Design]
    summary: str = ""
    trial_size: Callable[[DesignSpecBase, DesignContext], TrialSize] = trial_size_from_context
    table: Optional[Callable[["TableRequest"], "DecisionTable"]] = None
    #: one core's seconds per trial on the cohort engine (4 doses, N = 24), when the
    #: engine's default estimate would be far too low (None: the default)
    seconds_per_trial: Optional[float] = None

    @property
    def time_to_event(self) -> bool:
        return bool(self.design_class.time_to_event)

    @property
    def outcome(self) -> Outcome:
        return self.design_class.outcome

    def build(self, spec: DesignSpecBase, ctx: DesignContext) -> Design:
        """The design with its stopping rules (``rules``, ``stop_n_at_dose``, then ``max_n``;
        :func:`~escalation_sim.designs.rules.with_stopping_rules`).  A rule contradicting
        the design raises :class:`~escalation_sim.designs.rules.RuleConflict`."""
        size = self.trial_size(spec, ctx)
        check_rules(spec.rules or (), max_n=size.max_n, n_doses=ctx.n_doses,
                    stop_n_at_dose=spec.stop_n_at_dose,
                    max_n_per_dose=self.design_class.max_n_per_dose, design_type=self.type)
        return with_stopping_rules(self.make(spec, ctx), stop_n_at_dose=spec.stop_n_at_dose,
                                   max_n=size.max_n, rules=spec.rules)

    def decision_table(self, request: "TableRequest") -> "DecisionTable":
        if self.table is not None:
            return self.table(request)
        from .tables import next_cohort_table
        return next_cohort_table(request)


_REGISTRY: Dict[str, DesignEntry] = {}


def register(entry: DesignEntry) -> DesignEntry:
    _REGISTRY[entry.type] = entry
    return entry


_BUILTIN = ("threeplusthree", "boin", "crm", "tite", "mtpi2", "keyboard", "i3plus3", "blrm",
            "rolling6", "gboin", "tite_gboin", "boin12", "keyboard_obd")
_loaded = False
_LOAD_LOCK = threading.RLock()


def _load_builtin() -> None:
    """Import the built-in design modules (importing a module registers its designs).

    Under a lock, and ``_loaded`` is set only once every module is in: a second thread never
    sees a half-filled registry."""
    import importlib
    global _loaded
    with _LOAD_LOCK:
        if _loaded:
            return
        for mod in _BUILTIN:
            name = f"{__package__}.{mod}"
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
        # the built-in types in their listed order whatever was imported first, then others
        order = {t: i for i, t in enumerate(TYPE_MODULES)}
        items = sorted(_REGISTRY.items(), key=lambda kv: order.get(kv[0], len(order)))
        _REGISTRY.clear()
        _REGISTRY.update(items)
        _loaded = True


#: the module of each built-in type, in the order the registry lists them: a scenario's
#: designs import only their own modules (the command line's start-up: issue 18); the full
#: list is loaded for listings and unknown names (tests/test_cli.py checks this map)
TYPE_MODULES = {"3+3": "threeplusthree", "boin": "boin", "crm": "crm", "tite-crm": "tite",
                "tite-boin": "tite", "mtpi2": "mtpi2", "keyboard": "keyboard",
                "i3+3": "i3plus3", "blrm": "blrm", "rolling6": "rolling6",
                "rolling6-complete": "rolling6", "gboin": "gboin",
                "tite-gboin": "tite_gboin", "boin12": "boin12",
                "keyboard-obd": "keyboard_obd"}


def registry() -> Dict[str, DesignEntry]:
    if not _loaded:
        _load_builtin()
    return _REGISTRY


def design_types() -> List[str]:
    return list(registry())


def get_entry(type_name: str) -> DesignEntry:
    key = type_name.strip().lower() if isinstance(type_name, str) else type_name
    if not _loaded and key in TYPE_MODULES and key not in _REGISTRY:
        import importlib
        with _LOAD_LOCK:
            importlib.import_module(f"{__package__}.{TYPE_MODULES[key]}")
    if key in _REGISTRY:
        return _REGISTRY[key]
    reg = registry()
    if key in reg:
        return reg[key]
    raise KeyError(unknown_type_message(type_name))


def unknown_type_message(type_name) -> str:
    names = design_types()
    close = difflib.get_close_matches(str(type_name).lower(), names, n=1, cutoff=0.3)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown design type{hint} (known: {', '.join(names)})"


def build_design(spec: DesignSpecBase, ctx: DesignContext) -> Design:
    return get_entry(spec.type).build(spec, ctx)


def is_time_to_event(design: Design) -> bool:
    """True for a built design (wrappers included) that decides with pending patients."""
    return bool(design.time_to_event)
