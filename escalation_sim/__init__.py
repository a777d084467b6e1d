"""escalation-sim: phase I dose-escalation trials, simulated exactly and fast."""
from .types import Decision, StopReason, TrialState
from .outcomes import parse_outcomes, state_from_outcomes
from .scenario import Scenario, ScenarioError, load_scenario, load_scenario_text
from .exact import exact_tally
from .api import compare, exact_oc, simulate

__version__ = "0.1.0"

__all__ = ["Decision", "StopReason", "TrialState", "parse_outcomes", "state_from_outcomes",
           "Scenario", "ScenarioError", "load_scenario", "load_scenario_text", "simulate",
           "compare", "exact_oc", "exact_tally", "__version__"]
