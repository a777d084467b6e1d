"""Dask distributed backend: a real LocalCluster gives bit-identical results to local processes."""
import json

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from escalation_sim import simulate  # noqa: E402
from escalation_sim.cli import main  # noqa: E402
from escalation_sim.run.runner import backend_session  # noqa: E402
from escalation_sim.inputs.scenario import load_scenario_text  # noqa: E402
from escalation_sim.run.study import run_study  # noqa: E402

P3 = [0.05, 0.12, 0.25, 0.40]


@pytest.fixture(scope="module")
def sc_text(scenario_yaml):
    return scenario_yaml(P3, name="dask-test", n_trials=20000, seed=99)


STUDY = """\
name: dask-study
scenarios: [a.yaml]
sweep:
  truth.p_dlt: [[0.05, 0.12, 0.25, 0.40], [0.10, 0.25, 0.40, 0.55], [0.25, 0.40, 0.55, 0.70]]
  trial.max_n: [18, 24]
simulation: {n_trials: 6000, seed: 3, chunk_size: 2000}
"""


@pytest.fixture(scope="module")
def cluster():
    import logging
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as c:
        yield c


def _no_client():
    with pytest.raises(ValueError):
        distributed.default_client()


def test_simulate_on_cluster_equals_local_processes(cluster, sc_text):
    sc = load_scenario_text(sc_text, "dask-test.yaml")
    local = simulate(sc, n_jobs=2, backend="loky", chunk_size=2500)
    remote = simulate(sc, backend="dask", scheduler=cluster.scheduler_address, chunk_size=2500)
    assert remote.to_dict()["designs"] == local.to_dict()["designs"]
    assert remote.to_dict()["paired"] == local.to_dict()["paired"]
    assert remote.meta["backend"] == "dask"
    # the workers really did the work (each ran at least one chunk)
    with distributed.Client(cluster.scheduler_address) as client:
        assert len(client.scheduler_info()["workers"]) == 2
    _no_client()  # the run's client was closed


def test_study_on_cluster_equals_local(cluster, tmp_path, sc_text):
    (tmp_path / "a.yaml").write_text(sc_text)
    f = tmp_path / "study.yaml"
    f.write_text(STUDY)
    local = run_study(f, tmp_path / "local", n_jobs=2, backend="loky", quiet=True)
    remote = run_study(f, tmp_path / "remote", backend="dask",
                       scheduler=cluster.scheduler_address, quiet=True)
    assert len(local.oc) == 6 * 3
    pd.testing.assert_frame_equal(remote.oc, local.oc)
    pd.testing.assert_frame_equal(remote.summary, local.summary)
    meta = json.loads((tmp_path / "remote" / "study.json").read_text())
    assert meta["backend"] == "dask" and meta["scheduler"] == cluster.scheduler_address
    _no_client()


def test_cli_run_with_scheduler_and_own_local_cluster(cluster, tmp_path, capsys, sc_text):
    f = tmp_path / "a.yaml"
    f.write_text(sc_text)
    common = ["run", str(f), "--n-trials", "4000", "--chunk-size", "1000", "--json",
              "--compact"]
    assert main(common + ["--backend", "sequential"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(common + ["--backend", "dask", "--scheduler", cluster.scheduler_address,
                          "--out", str(tmp_path / "o"), "--resume"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["designs"] == ref["designs"] and got["paired"] == ref["paired"]
    # no address: a LocalCluster of --n-jobs workers is started for the run and closed after
    with backend_session("dask", 1) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        addr = client.scheduler.address
        res = simulate(load_scenario_text(sc_text, "a.yaml"), n_trials=4000, chunk_size=1000,
                       backend="dask")  # reuses the current client
    assert res.to_dict()["designs"] == ref["designs"]
    _no_client()
    with pytest.raises(OSError):
        distributed.Client(addr, timeout="1s")
