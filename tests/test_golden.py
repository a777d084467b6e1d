"""Golden snapshot: every bundled scenario and study gives the numbers recorded in
tests/golden/golden.json, to the bit.

The snapshot was recorded before the architecture refactor (issue 11) from the code as it then
stood, so that refactors can prove they change nothing.  It is not a reference for correctness
(the reference tests do that): it is a guard against unintended change.  A commit that changes
a number on purpose regenerates it with ``python tests/golden/make_golden.py`` and says why.
"""
import json

import pytest

from golden.make_golden import GOLDEN, normalise, scenario_records, study_records, ROOT

SNAPSHOT = json.loads(GOLDEN.read_text())


def _diff(a, b, path="") -> list:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'snapshot' if k in a else 'now'}")
            else:
                out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x for i, (u, v) in enumerate(zip(a, b, strict=True))
                for x in _diff(u, v, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: snapshot {a!r}, now {b!r}"]


@pytest.mark.parametrize("name", sorted(SNAPSHOT["scenarios"]))
def test_scenario_unchanged(name):
    now = normalise(scenario_records(ROOT / "scenarios" / name))
    diffs = _diff(SNAPSHOT["scenarios"][name], now)
    assert not diffs, "\n".join(diffs[:30])


@pytest.mark.parametrize("name", sorted(SNAPSHOT["studies"]))
def test_study_unchanged(name):
    now = normalise(study_records(ROOT / "scenarios" / "studies" / name))
    diffs = _diff(SNAPSHOT["studies"][name], now)
    assert not diffs, "\n".join(diffs[:30])


def test_snapshot_covers_every_bundled_file():
    assert sorted(SNAPSHOT["scenarios"]) == sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))
    assert sorted(SNAPSHOT["studies"]) == sorted(
        p.name for p in (ROOT / "scenarios" / "studies").glob("*.yaml"))
