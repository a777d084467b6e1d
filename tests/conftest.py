"""Shared test set-up: hypothesis profiles, the scenario template, design building, the CLI.

Fixtures (use them by naming them as test arguments):

``scenario_yaml(p=..., **kw) -> str``
    the 4-dose scenario template most tests start from (3+3, BOIN and CRM with the skeleton
    0.10/0.17/0.25/0.35, target 0.25, N = 24, cohorts of 3).  Tests edit the text with
    ``str.replace``, so its spelling is fixed: ``doses: [DL1, DL2, DL3, DL4]``,
    ``target: 0.25``, ``max_n: 24``, ``{type: boin}``, probabilities with two decimals.
``scenario(p=..., **kw) -> Scenario``
    the same, loaded.
``build_design(kind, n_doses=4, target=0.25, cohort_size=3, max_n=24, start_dose=0, **opts)``
    a design from the registry, its options validated by the design's own spec model, exactly
    as a scenario file would build it.
``cli(*args) -> CliResult(returncode, stdout, stderr)``
    ``escalation-sim ARGS`` run in this process (``escalation_sim.cli.main``), with the
    output captured; argparse usage errors give their exit code instead of raising.
``relma_doses``
    the seed trial's dose levels with amounts, for ``scenario_yaml(doses=...)``.
``root``
    the repository root (``root / "scenarios"`` holds the bundled scenarios).

Hypothesis profiles: ``ci`` (derandomised, so a failure replays exactly; the failing example
and its reproduction blob are printed; no deadline) is loaded when ``CI`` is set to a true
value, as ``.ci/run`` runs under; ``HYPOTHESIS_PROFILE=NAME`` picks a profile explicitly
(``ci`` or ``dev``).  Tests that set their own ``@settings`` keep these fields unless they
override them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------- hypothesis
try:
    from hypothesis import settings as _hyp_settings
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    _hyp_settings = None

if _hyp_settings is not None:
    _hyp_settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
    _hyp_settings.register_profile("dev", print_blob=True)
    _ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _ci else "dev"))


def pytest_report_header(config):
    if _hyp_settings is None:
        return None
    name = getattr(_hyp_settings, "get_current_profile_name", None)
    return f"hypothesis profile: {name() if name else _hyp_settings._current_profile}"


# ---------------------------------------------------------------------------- the template
#: the seed trial's hypothetical truth (README, scenarios/relma_cel_sle.yaml)
P_SEED = (0.05, 0.10, 0.18, 0.28)
#: the CRM skeleton of the bundled standard scenarios
SKELETON = (0.10, 0.17, 0.25, 0.35)
DESIGNS = ('{type: "3+3"}', "{type: boin}",
           "{type: crm, skeleton: [0.10, 0.17, 0.25, 0.35]}")


def _num(x: float) -> str:
    """0.1 -> '0.10' (the template's spelling), other values as Python prints them."""
    return f"{x:.2f}" if round(x, 2) == x else repr(float(x))


#: the seed trial's four dose levels with their amounts (NCT05765006)
RELMA_DOSES = "".join(f"\n  - {{label: DL{i}, amount: {a}e6, unit: CAR-T cells}}"
                      for i, a in enumerate((25, 50, 75, 100), start=1))


def scenario_yaml(p: Sequence[float] = P_SEED, *, name: str = "test",
                  designs: Sequence[str] = DESIGNS, target: float = 0.25, max_n: int = 24,
                  cohort_size: int = 3, n_trials: int = 1000, seed: int = 1,
                  doses: str = "[DL1, DL2, DL3, DL4]", description: str = "",
                  extra: str = "") -> str:
    """Scenario YAML text; ``designs`` are flow-style YAML mappings, ``doses`` a flow list or
    block mappings such as ``RELMA_DOSES``, ``extra`` is appended."""
    lines = [f"name: {name}", *([f"description: {description}"] if description else []),
             "doses:" + (doses if doses.startswith("\n") else " " + doses),
             "truth: {p_dlt: [" + ", ".join(_num(x) for x in p) + "]}",
             f"target: {target}",
             f"trial: {{max_n: {max_n}, cohort_size: {cohort_size}, start_dose: 1}}",
             "designs:", *(f"  - {d}" for d in designs),
             f"simulation: {{n_trials: {n_trials}, seed: {seed}}}"]
    return "\n".join(lines) + "\n" + extra


def build_design(kind: str, n_doses: int = 4, target: float = 0.25, cohort_size: int = 3,
                 max_n: int = 24, start_dose: int = 0, **opts):
    from escalation_sim.designs.base import DesignContext
    from escalation_sim.designs.registry import get_entry
    entry = get_entry(kind)
    spec = entry.spec_model.model_validate({"type": kind, **opts})
    return entry.build(spec, DesignContext(n_doses=n_doses, target=target,
                                           cohort_size=cohort_size, max_n=max_n,
                                           start_dose=start_dose))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(name="scenario_yaml", scope="session")
def _scenario_yaml_fixture():
    return scenario_yaml


@pytest.fixture(scope="session")
def relma_doses() -> str:
    return RELMA_DOSES


@pytest.fixture(name="scenario", scope="session")
def _scenario_fixture():
    from escalation_sim.inputs.scenario import load_scenario_text

    def load(p: Sequence[float] = P_SEED, **kw):
        return load_scenario_text(scenario_yaml(p, **kw), f"{kw.get('name', 'test')}.yaml")
    return load


@pytest.fixture(name="build_design", scope="session")
def _build_design_fixture():
    return build_design


# ------------------------------------------------------------------------ the command line
@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """Run ``escalation-sim ARGS`` in-process; arguments are converted with ``str``."""
    from escalation_sim.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()                      # drop what the test printed before
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:                # argparse: --help, usage errors
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(rc, out.out, out.err)
    return run
