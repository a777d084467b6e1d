"""escalation-sim: phase I dose-escalation trials, simulated exactly and fast.

The names below are imported on first use (PEP 562), so that ``import escalation_sim`` and
the command line's ``--help``, ``validate`` and ``table`` start quickly."""
from ._version import __version__

_LAZY = {
    "Decision": ".types", "StopReason": ".types", "TrialState": ".types",
    "parse_outcomes": ".outcomes", "state_from_outcomes": ".outcomes",
    "Scenario": ".inputs.scenario", "ScenarioError": ".inputs.scenario",
    "load_scenario": ".inputs.scenario", "load_scenario_text": ".inputs.scenario",
    "exact_tally": ".engines.exact",
    "compare": ".api", "dose_paths": ".api", "exact_oc": ".api", "next_dose": ".api",
    "patient_log": ".api", "replay": ".api", "select_mtd": ".api", "simulate": ".api",
    "swimmer_data": ".api",
}

__all__ = ["Decision", "StopReason", "TrialState", "parse_outcomes", "state_from_outcomes",
           "Scenario", "ScenarioError", "load_scenario", "load_scenario_text", "simulate",
           "compare", "exact_oc", "exact_tally", "patient_log", "swimmer_data", "next_dose",
           "select_mtd", "dose_paths", "replay", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
