"""The example notebooks run from top to bottom without an error.

Each notebook is executed with nbclient in a fresh python3 kernel, from the notebooks/
folder, with few trials (ESCALATION_SIM_NB_TRIALS=500).  The notebooks carry their own checks
(simulated operating characteristics within a few standard errors of exact enumeration;
selection unchanged by the accrual rate for designs that wait for complete cohorts), so a
passing run also checks those numbers.  They are stored without outputs.
"""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_quickstart.ipynb", "02_compare_designs.ipynb",
             "03_toxicity_assumptions.ipynb"]


def test_every_notebook_is_listed_and_stored_without_outputs():
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(NB_DIR / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        # the trial count is read from the environment at the top
        assert "ESCALATION_SIM_NB_TRIALS" in code[0].source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, monkeypatch):
    monkeypatch.setenv("ESCALATION_SIM_NB_TRIALS", "500")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:  # pragma: no cover - on failure
        pytest.fail(f"{name} failed:\n{exc}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    # the trial count really was taken from the environment
    first = next(c for c in nb.cells if c.cell_type == "code")
    text = "".join(o.get("text", "") for o in first.outputs)
    assert "500 trials per design" in text
    # every notebook draws something
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{name} drew no figure"
