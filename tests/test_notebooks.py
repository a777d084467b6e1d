"""The example notebooks run from top to bottom without an error.

Each notebook is executed with nbclient in a fresh python3 kernel, from the notebooks/
folder, with few trials (ESCALATION_SIM_NB_TRIALS).  The notebooks carry their own checks, so
a passing run also checks those numbers: 01 and 02 compare simulated operating
characteristics with exact enumeration (|z| < 5), which stays a meaningful bound at 500 trials
(SE of a PCS about 0.02); 03 checks that selection does not depend on the accrual rate for
designs that wait for complete cohorts, which holds for any trial count, so it runs its nine
calendar-time simulations at 200 trials.  They are stored without outputs.

The three kernels run at the same time (each is a separate single-core process and the test
process only waits for them), so the notebooks take the time of the longest one on a
2-core machine rather than the sum; every notebook is seeded, so this changes no number.
"""
import asyncio
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_quickstart.ipynb", "02_compare_designs.ipynb",
             "03_toxicity_assumptions.ipynb", "04_protocol_appendix.ipynb"]
N_TRIALS = {"01_quickstart.ipynb": 500, "02_compare_designs.ipynb": 500,
            "03_toxicity_assumptions.ipynb": 200, "04_protocol_appendix.ipynb": 200}


def test_every_notebook_is_listed_and_stored_without_outputs():
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(NB_DIR / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        # the trial count is read from the environment at the top
        assert "ESCALATION_SIM_NB_TRIALS" in code[0].source


async def _execute(name):
    """Run one notebook in its own kernel; returns (executed notebook, error or None)."""
    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    env = dict(os.environ, ESCALATION_SIM_NB_TRIALS=str(N_TRIALS[name]),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    try:
        await client.async_execute(env=env)
    except nbclient.exceptions.CellExecutionError as exc:  # pragma: no cover - on failure
        return nb, exc
    return nb, None


@pytest.fixture(scope="module")
def executed():
    async def run_all():
        return await asyncio.gather(*(_execute(name) for name in NOTEBOOKS))
    return dict(zip(NOTEBOOKS, asyncio.run(run_all()), strict=True))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, executed):
    nb, error = executed[name]
    if error is not None:  # pragma: no cover - on failure
        pytest.fail(f"{name} failed:\n{error}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    # the trial count really was taken from the environment
    first = next(c for c in nb.cells if c.cell_type == "code")
    text = "".join(o.get("text", "") for o in first.outputs)
    assert f"{N_TRIALS[name]} trials per design" in text
    # every notebook draws something
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{name} drew no figure"
