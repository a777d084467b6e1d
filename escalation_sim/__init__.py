"""escalation-sim: phase I dose-escalation trials, simulated exactly and fast."""
from ._version import __version__
from .types import Decision, StopReason, TrialState
from .outcomes import parse_outcomes, state_from_outcomes
from .inputs.scenario import Scenario, ScenarioError, load_scenario, load_scenario_text
from .engines.exact import exact_tally
from .api import (compare, dose_paths, exact_oc, next_dose, patient_log, replay, select_mtd,
                  simulate, swimmer_data)


__all__ = ["Decision", "StopReason", "TrialState", "parse_outcomes", "state_from_outcomes",
           "Scenario", "ScenarioError", "load_scenario", "load_scenario_text", "simulate",
           "compare", "exact_oc", "exact_tally", "patient_log", "swimmer_data", "next_dose",
           "select_mtd", "dose_paths", "replay", "__version__"]
