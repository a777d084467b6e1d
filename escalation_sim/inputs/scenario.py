"""The scenario file: one true dose-toxicity curve and the designs to compare on it.

Validation collects every problem at once and reports each as
``FILE: field.path: message (got VALUE)``.  Doses are 1-based in the file.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

import numpy as np
import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator)

from ..designs.base import Design, DesignContext, DesignSpecBase, Outcome
from ..grades import check_scores
from ..designs.registry import get_entry, registry, unknown_type_message
from ..designs.rules import RuleConflict
from .limits import (MAX_DOSES, MAX_FILE_BYTES, MAX_JOBS, MAX_PROBLEMS, MAX_SEED,  # noqa: F401
                     MAX_TRIALS, MAX_YAML_DEPTH, MAX_YAML_VALUES, _CONTROL, _CONTROL_ALL,
                     _MAX_MESSAGE, ScenarioError, json_like, printable, short)
from .truth import (DltCriterion, OutcomeModel, TruthSpec, scenario_window_days,
                    truth_problems)

try:  # the discrete-event engine's logistics block
    from .conduct import Conduct
except ImportError:  # pragma: no cover - during development only
    Conduct = Dict[str, Any]  # type: ignore

Prob = float
_short = short  # the name the rest of the package uses

#: what ``truth: {p_dlt}`` gives for each patient (a design consuming anything else cannot run)
TRUTH_OUTCOMES = (Outcome.BINARY_DLT,)
#: what a graded truth (``truth.toxicities``) gives besides: the worst grade, hence a score
GRADED_TRUTH_OUTCOMES = (Outcome.SCORE,)



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _no_control(v: Optional[str], newlines: bool = False) -> Optional[str]:
    """Names and labels are printed on terminals: no control characters (escape codes)."""
    if isinstance(v, str) and (_CONTROL if newlines else _CONTROL_ALL).search(v):
        raise ValueError(f"must not contain control characters such as terminal escape "
                         f"codes (got {_short(v)})")
    return v


class DoseSpec(_Strict):
    label: str = Field(description="name shown in tables, e.g. DL1")
    amount: Optional[float] = Field(default=None, gt=0, allow_inf_nan=False,
                                    description="dose amount, e.g. 25e6")
    unit: Optional[str] = Field(default=None, description="unit of amount, e.g. CAR-T cells")

    @field_validator("label", "unit")
    @classmethod
    def _printable(cls, v):
        return _no_control(v)


class TrialSpec(_Strict):
    max_n: int = Field(ge=1, le=1000, description="maximum number of patients")
    cohort_size: int = Field(default=3, ge=1, le=12)
    start_dose: int = Field(default=1, ge=1, description="1-based")


class SimulationSpec(_Strict):
    n_trials: int = Field(default=10000, ge=1, le=MAX_TRIALS)
    seed: int = Field(default=2026, ge=0, le=MAX_SEED)
    n_jobs: Union[Literal["auto"], Annotated[int, Field(ge=-1, le=MAX_JOBS)]] = Field(
        default="auto", description="parallel jobs; -1 = every CPU; auto (the default) = one "
        "process unless the run is long enough for more workers to pay off")
    chunk_size: Optional[int] = Field(default=None, ge=1)
    method: Literal["monte-carlo", "exact"] = "monte-carlo"
    backend: Literal["loky", "multiprocessing", "threading", "sequential", "dask"] = "loky"
    scheduler: Optional[str] = Field(default=None, description="Dask scheduler address")

    @field_validator("n_jobs")
    @classmethod
    def _jobs(cls, v):
        if v != "auto" and v == 0:
            raise ValueError("must be -1 (every CPU) or a positive integer (got 0)")
        return v


class OCSpec(_Strict):
    # a tuple (hashable, what the engines take); the file gives a list, turned into a tuple
    # before the strict check
    acceptable: Optional[Tuple[float, ...]] = Field(
        default=None, description="[lo, hi]: doses with lo <= p_dlt <= hi count as correct")

    @field_validator("acceptable", mode="before")
    @classmethod
    def _as_tuple(cls, v):
        return tuple(v) if isinstance(v, list) else v

    @field_validator("acceptable")
    @classmethod
    def _band(cls, v):
        if v is not None and not (len(v) == 2 and 0 <= v[0] <= v[1] <= 1):
            raise ValueError("must be [lo, hi] with 0 <= lo <= hi <= 1")
        return tuple(v) if v is not None else None


class ScenarioModel(_Strict):
    name: str
    description: str = ""
    doses: List[Union[DoseSpec, str]] = Field(min_length=1)
    truth: TruthSpec
    dlt: Optional[List[DltCriterion]] = Field(
        default=None, min_length=1,
        description="which events are DLTs (graded truths): [{type, min_grade}, ...]; default: "
                    "every type at grade >= 3 inside the DLT window")
    target: float = Field(gt=0, lt=1, allow_inf_nan=False)
    trial: TrialSpec
    designs: List[Dict[str, Any]]
    simulation: SimulationSpec = Field(default_factory=SimulationSpec)
    oc: OCSpec = Field(default_factory=OCSpec)
    conduct: Optional[Conduct] = None  # type: ignore[valid-type]

    @field_validator("doses", mode="before")
    @classmethod
    def _labels(cls, v):
        if isinstance(v, list) and len(v) > MAX_DOSES:
            raise ValueError(f"at most {MAX_DOSES} dose levels (got {len(v):,})")
        if isinstance(v, list):
            return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x
                    for x in v]
        return v

    @field_validator("name")
    @classmethod
    def _printable_name(cls, v):
        return _no_control(v)

    @field_validator("description")
    @classmethod
    def _printable_description(cls, v):
        return _no_control(v, newlines=True)


@dataclass
class DesignItem:
    name: str
    type: str
    spec: DesignSpecBase
    design: Design
    time_to_event: bool = False


@dataclass
class Scenario:
    """A validated scenario with its designs built."""

    model: ScenarioModel
    designs: List[DesignItem]
    source: str = "<memory>"
    raw: Dict[str, Any] = field(default_factory=dict)
    #: False for a file loaded for real-data commands without a ``truth`` (next-dose,
    #: select-mtd, paths, replay): nothing may then read the truth
    has_truth: bool = True

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def n_doses(self) -> int:
        return len(self.model.doses)

    @property
    def dose_labels(self) -> List[str]:
        return [d if isinstance(d, str) else d.label for d in self.model.doses]

    @property
    def p_true(self) -> np.ndarray:
        """True DLT rate per dose: ``truth.p_dlt``, or the rate derived exactly from graded
        toxicities and the ``dlt`` rule (:meth:`true_dlt_rates`)."""
        if not self.has_truth:
            raise ValueError(f"{self.source}: truth: this scenario has no truth; give one "
                             "(truth: {p_dlt: [...]}) to simulate")
        if not self.model.truth.graded:
            return np.asarray(self.model.truth.p_dlt, dtype=float)
        return self.outcome_model.dlt_rates()

    @cached_property
    def outcome_model(self) -> OutcomeModel:
        """The patient-outcome model of the truth (:mod:`escalation_sim.inputs.truth`)."""
        return OutcomeModel.from_spec(self.model.truth, self.model.dlt, self.dlt_window_days)

    @property
    def dlt_window_days(self) -> float:
        """``conduct.dlt_window_days``, else ``truth.dlt_window_days``, else 28."""
        return scenario_window_days(self.model.truth, self.model.conduct)

    def true_dlt_rates(self) -> np.ndarray:
        """P(DLT) per dose (a copy of :attr:`p_true`)."""
        return np.array(self.p_true, dtype=float)

    def true_late_rates(self) -> np.ndarray:
        """P(a qualifying event that starts only after the DLT window) per dose."""
        return self.outcome_model.late_rates()

    def true_response_rates(self):
        """P(response) per dose, or None without ``truth.efficacy``."""
        return self.outcome_model.response_rates()

    def true_score_distribution(self, scores):
        """``(values, probs)`` of the normalized severity score of the worst grade."""
        return self.outcome_model.score_distribution(scores)

    @property
    def target(self) -> float:
        return self.model.target

    @property
    def has_logistics(self) -> bool:
        return self.model.conduct is not None

    def design(self, name: str) -> DesignItem:
        for d in self.designs:
            if d.name == name:
                return d
        folded = [d for d in self.designs if d.name.casefold() == str(name).casefold()]
        if len(folded) == 1:  # design names are case-insensitive when unambiguous
            return folded[0]
        close = difflib.get_close_matches(name, [d.name for d in self.designs], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"no design named {name!r} in {self.source}{hint} "
                       f"(designs: {', '.join(d.name for d in self.designs)})")

    def resolved(self) -> Dict[str, Any]:
        """The scenario with every default filled in (written beside results)."""
        d = self.model.model_dump(mode="json")
        conduct = d.get("conduct")
        if isinstance(conduct, dict):   # options added later: absent when not used
            for key in CONDUCT_ADDED:
                if conduct.get(key) is None:
                    conduct.pop(key, None)
            if conduct.get("screen_while_paused") is True:     # the default
                conduct.pop("screen_while_paused")
            if conduct.get("manufacture_before_slot") is False:     # the default
                conduct.pop("manufacture_before_slot")
        if d.get("dlt") is None:
            d.pop("dlt", None)
        if self.model.truth.graded:  # the defaults of a graded truth, written out
            m = self.outcome_model
            d["truth"].setdefault("correlation", m.correlation)
            if self.model.conduct is None:
                d["truth"].setdefault("dlt_window_days", m.window_days)
            d.setdefault("dlt", [{"type": t, "min_grade": g} for t, g in m.rule_names])
        d["designs"] = [dict(_spec_dump(item.spec), name=item.name) for item in self.designs]
        return d

    def with_truth(self, p_dlt) -> "Scenario":
        """The same scenario with the binary truth ``p_dlt`` (graded toxicities, their
        correlation and window and the ``dlt`` rule are dropped)."""
        raw = dict(self.raw)
        drop = ("toxicities", "correlation", "dlt_window_days")
        truth = {k: v for k, v in raw.get("truth", {}).items() if k not in drop}
        raw["truth"] = dict(truth, p_dlt=[float(x) for x in p_dlt])
        raw.pop("dlt", None)
        return load_scenario_dict(raw, self.source)


def _spec_dump(spec: DesignSpecBase) -> Dict[str, Any]:
    """A design spec with every default filled in; ``rules`` only when given (so that the
    resolved form, and the checkpoint hash made from it, of a design without rules is what
    it was before rules existed)."""
    d = spec.model_dump(mode="json")
    if d.get("rules") is None:
        d.pop("rules", None)
    return d


# --------------------------------------------------------------------------------------
def _fmt_loc(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = printable(str(part), keep_newlines=False)
            key = key if len(key) <= 40 else key[:37] + "..."
            out += key if part == "..." else ("." if out else "") + key
    return out or "(top level)"


def _clean_loc(loc, data, missing: bool) -> tuple:
    """``loc`` without the tags pydantic inserts for unions and validators (``DoseSpec``,
    ``str``, ``function-after[...]``): walking the validated data, a part that is a key or
    index of it is kept (a user's key named ``str`` too), as is the missing key of a
    ``missing`` error; any other part is a tag."""
    out = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif (isinstance(cur, list) and isinstance(part, int) and not isinstance(part, bool)
              and 0 <= part < len(cur)):
            cur = cur[part]
        elif missing and i == len(loc) - 1:
            cur = None
        else:
            continue
        out.append(part)
    return tuple(out)


def _pydantic_problems(err: ValidationError, prefix=(), model=None, data=None) -> List[str]:
    """One ``field.path: message (got VALUE)`` line per pydantic error; ``data`` is what was
    validated (used to tell the file's keys from pydantic's tags in error locations)."""
    out = []
    for e in err.errors():
        if data is not None:
            parts = _clean_loc(e["loc"], data, e["type"] == "missing")
        else:
            parts = tuple(p for p in e["loc"] if not (isinstance(p, str) and (
                p.startswith("function-") or p in ("DoseSpec", "str", "list[float]"))))
        loc = tuple(prefix) + parts
        typ = e["type"]
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if typ == "missing":
            out.append(f"{_fmt_loc(loc)}: required key is missing")
            continue
        if typ == "extra_forbidden":
            fields = _fields_at(model, e["loc"]) if model is not None else []
            close = difflib.get_close_matches(str(e["loc"][-1]), fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(f"{_fmt_loc(loc)}: unknown key{hint} (got {_short(e.get('input'))})")
            continue
        if len(msg) > _MAX_MESSAGE:  # a validator that printed a whole (huge) value
            msg = msg[:_MAX_MESSAGE - 3] + "..."
        if "(got " in msg:  # the validator already shows the value
            out.append(f"{_fmt_loc(loc)}: {msg}")
        else:
            out.append(f"{_fmt_loc(loc)}: {msg} (got {_short(e.get('input'))})")
    # a union (dose as label or mapping) reports both branches; keep one per location
    seen, uniq = set(), []
    for p in out:
        k = p.split(":")[0]
        if k in seen and "doses[" in k:
            continue
        seen.add(k)
        uniq.append(p)
    return uniq


def _fields_at(model, loc) -> List[str]:
    cls = model
    for part in loc[:-1]:
        if cls is None or isinstance(part, int):
            continue
        f = getattr(cls, "model_fields", {}).get(part)
        if f is None:
            return []
        ann = f.annotation
        cls = None
        for cand in getattr(ann, "__args__", ()) + (ann,):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                cls = cand
                break
            for sub in getattr(cand, "__args__", ()):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    cls = sub
    return list(getattr(cls, "model_fields", {})) if cls is not None else []


class YamlLimitError(yaml.YAMLError):
    """A YAML document beyond the input limits (refused before it is built)."""

    def __init__(self, problem: str, mark=None, path=()):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark
        self.path = tuple(path)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``25e6`` and ``1.0e-3`` as numbers (YAML 1.2 floats), and
    refuses, while composing and so before anything is built, what no scenario needs:
    duplicate keys, recursive aliases, nesting deeper than ``MAX_YAML_DEPTH`` and documents
    whose aliases expand to more than ``MAX_YAML_VALUES`` values ("billion laughs").

    Every composed node counts its expanded size: 1 plus the sizes of its children, where an
    alias counts the whole size of the node it names.  An alias costs nothing to compose
    (it points to the node already built), but everything downstream - validation, error
    messages, copies of study cells - walks the expansion, so the expansion is what is
    bounded.  The loader keeps the path of the node being composed, so a refusal names the
    field."""

    def __init__(self, stream):
        super().__init__(stream)
        self._values = 0                        # expanded values composed so far
        self._path: List[Any] = []              # keys / indices down to the current node
        self._anchor_size: Dict[str, int] = {}  # anchor -> expanded size of its node

    def _count(self, n: int, mark) -> None:
        self._values += n
        if self._values > MAX_YAML_VALUES:
            raise YamlLimitError(
                f"the document expands to more than {MAX_YAML_VALUES:,} values (an alias "
                "repeats every value it names); write the values out, or use fewer aliases",
                mark, self._path)

    def compose_node(self, parent, index):
        pushed = isinstance(index, (int, yaml.ScalarNode)) and not isinstance(index, bool)
        if pushed:
            self._path.append(index if isinstance(index, int) else index.value)
        try:
            return self._compose_counted(parent, index)
        finally:
            if pushed:
                self._path.pop()

    def _compose_counted(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            size = self._anchor_size.get(event.anchor)
            if size is None and event.anchor in self.anchors:
                raise YamlLimitError(f"alias *{event.anchor} is used inside the value it "
                                     "names (a value cannot contain itself)",
                                     event.start_mark, self._path)
            node = super().compose_node(parent, index)  # reports undefined aliases
            self._count(size or 0, event.start_mark)
            return node
        if len(self._path) >= MAX_YAML_DEPTH:
            raise YamlLimitError(f"values are nested more than {MAX_YAML_DEPTH} levels deep",
                                 event.start_mark, self._path[:3] + ["..."])
        start = self._values
        self._count(1, event.start_mark)
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._anchor_size[event.anchor] = self._values - start
        return node

    def compose_document(self):
        self._anchor_size = {}
        return super().compose_document()

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        first: Dict[Tuple[str, str], Any] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                raise YamlLimitError(
                    f"duplicate key: given at line {seen.start_mark.line + 1} and again at "
                    f"line {key.start_mark.line + 1}; give each key once",
                    None, self._path + [key.value])
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_text_file(path: Union[str, Path], max_bytes: Optional[int] = None) -> Tuple[str, str]:
    """``(source, text)`` of a UTF-8 file; a ScenarioError names the file if it is unreadable,
    not a regular file (a device such as /dev/zero, a pipe, a folder) or larger than
    ``max_bytes`` (default ``MAX_FILE_BYTES``): at most that many bytes are ever read."""
    source = str(path)
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ScenarioError(source, ["is a folder, not a file"])
        if not stat.S_ISREG(st.st_mode):  # checked before opening: a pipe would block
            raise ScenarioError(source, ["not a regular file (a device, pipe or socket); "
                                         "give a YAML file"])
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ScenarioError(source, ["file not found"])
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte
        raise ScenarioError(source, [f"cannot read file: {exc}"])
    if len(data) > limit:
        raise ScenarioError(source, [f"file is larger than {limit:,} bytes, the limit for "
                                     "scenario and study files (they are a few kilobytes)"])
    try:
        return source, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [f"cannot read file: not UTF-8 text ({exc.reason} at "
                                     f"byte {exc.start})"])


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: malformed YAML: message``, or for a
    refused document ``field.path: message (line L, column C)``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, YamlLimitError):
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{_fmt_loc(exc.path)}: {problem}{at}"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}malformed YAML: {problem}"


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text``, within the input limits; ScenarioError otherwise."""
    if len(text) > MAX_FILE_BYTES:  # text given directly (the API), not read from a file
        raise ScenarioError(source, [f"text is longer than {MAX_FILE_BYTES:,} characters, "
                                     "the limit for scenario and study files"])
    loader = None
    try:
        loader = _Loader(text)  # the reader checks the characters here
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [yaml_problem(exc)])
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise ScenarioError(source, [f"values are nested more than {MAX_YAML_DEPTH} levels "
                                     "deep"])
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: Union[str, Path]) -> Tuple[str, Any]:
    """``(source, document)`` of a YAML file, within the input limits."""
    source, text = read_text_file(path)
    return source, parse_yaml(text, source)


def load_scenario(path: Union[str, Path], require_truth: bool = True) -> Scenario:
    """The validated scenario of a file.  ``require_truth=False`` (the real-data commands:
    next-dose, select-mtd, paths, replay) accepts a file without ``truth``; the scenario's
    ``has_truth`` is then False and its truth cannot be read."""
    source, raw = load_yaml_file(path)
    if not require_truth and isinstance(raw, dict) and "truth" not in raw:
        doses = raw.get("doses")
        k = len(doses) if isinstance(doses, list) and doses else 1
        # a stand-in that validates and that nothing reads (has_truth=False guards it)
        sc = _scenario_from_raw(dict(raw, truth={"p_dlt": [0.5] * k}), source)
        sc.raw = raw
        sc.has_truth = False
        return sc
    return _scenario_from_raw(raw, source)


def load_scenario_text(text: str, source: str = "<string>") -> Scenario:
    return _scenario_from_raw(parse_yaml(text, source), source)


def _scenario_from_raw(raw: Any, source: str) -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError(source, [f"(top level): expected a mapping of keys "
                                     f"(got {_short(raw)})"])
    return load_scenario_dict(raw, source)


def load_scenario_dict(raw: Dict[str, Any], source: str = "<dict>") -> Scenario:
    problems: List[str] = []
    model: Optional[ScenarioModel] = None
    try:
        model = ScenarioModel.model_validate(raw)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err, model=ScenarioModel, data=raw))

    # design entries are checked one by one against their own spec model
    designs_raw = raw.get("designs")
    specs: List[Tuple[int, DesignSpecBase]] = []
    if isinstance(designs_raw, list):
        if not designs_raw:
            problems.append("designs: must list at least one design (got [])")
        for i, item in enumerate(designs_raw):
            if not isinstance(item, dict):
                problems.append(f"designs[{i}]: expected a mapping like {{type: boin}} "
                                f"(got {_short(item)})")
                continue
            if "type" not in item:
                problems.append(f"designs[{i}].type: required key is missing")
                continue
            try:
                entry = get_entry(item["type"])
            except (KeyError, AttributeError, TypeError):
                msg = (unknown_type_message(item["type"]) if isinstance(item["type"], str)
                       else "must be a design type name such as boin")
                problems.append(f"designs[{i}].type: {msg} (got {_short(item['type'])})")
                continue
            data = dict(item)
            data["type"] = entry.type
            try:
                specs.append((i, entry.spec_model.model_validate(data)))
            except ValidationError as err:
                problems.extend(_pydantic_problems(err, prefix=("designs", i),
                                                   model=entry.spec_model, data=data))
    elif designs_raw is None and "designs" in raw:
        problems.append("designs: must list at least one design (got null)")

    # cross-field checks need the parts that did validate
    truth = raw.get("truth") if isinstance(raw.get("truth"), dict) else {}
    doses = raw.get("doses") if isinstance(raw.get("doses"), list) else None
    p = truth.get("p_dlt") if isinstance(truth.get("p_dlt"), list) else None
    K = len(doses) if doses else None
    if K and p is not None and len(p) != K:
        problems.append(f"truth.p_dlt: has {len(p)} values for {K} doses (got {_short(p)})")
    if p is not None and all(isinstance(x, (int, float)) and math.isfinite(x) for x in p):
        if any(b < a for a, b in zip(p, p[1:])) and not truth.get("allow_non_monotone", False):
            problems.append("truth.p_dlt: must be non-decreasing in dose; set "
                            f"truth.allow_non_monotone: true to allow it (got {_short(p)})")
    problems.extend(truth_problems(raw, K))
    trial = raw.get("trial") if isinstance(raw.get("trial"), dict) else {}
    sd = trial.get("start_dose", 1)
    if K and isinstance(sd, int) and not isinstance(sd, bool) and not 1 <= sd <= K:
        problems.append(f"trial.start_dose: must be between 1 and {K} (got {sd})")
        model = None  # designs cannot be built on a bad start dose
    if doses:
        labels = [d if not isinstance(d, dict) else d.get("label") for d in doses]
        for i, x in enumerate(doses):
            if isinstance(x, str) and _CONTROL_ALL.search(x):
                problems.append(f"doses[{i}]: must not contain control characters such as "
                                f"terminal escape codes (got {_short(x)})")
        seen_l = [str(x) for x in labels if x is not None]
        counts: Dict[str, int] = {}
        for x in seen_l:
            counts[x] = counts.get(x, 0) + 1
        dup = sorted(x for x, k in counts.items() if k > 1)
        if dup:
            problems.append(f"doses: labels must be distinct (got {_short(seen_l)}; "
                            f"repeated: {', '.join(dup)})")

    if model is not None and model.conduct is not None:
        model = _conduct_with_doses(model, problems)

    names: Dict[str, int] = {}
    items: List[DesignItem] = []
    if model is not None or (K and specs):
        target = raw.get("target")
        for i, spec in specs:
            name = spec.name or spec.type
            if _CONTROL_ALL.search(name):
                problems.append(f"designs[{i}].name: must not contain control characters such "
                                f"as terminal escape codes (got {_short(name)})")
                continue
            if name in names:
                problems.append(f"designs[{i}].name: duplicate design name {name!r} (also "
                                f"designs[{names[name]}]); give each design a distinct name")
                continue
            names[name] = i
            if model is None:
                continue
            ctx = DesignContext(n_doses=K, target=model.target,
                                cohort_size=model.trial.cohort_size, max_n=model.trial.max_n,
                                start_dose=model.trial.start_dose - 1,
                                dose_amounts=tuple(None if isinstance(d, str) else d.amount
                                                   for d in model.doses))
            if spec.start_dose is not None and not 1 <= spec.start_dose <= K:
                problems.append(f"designs[{i}].start_dose: must be between 1 and {K} "
                                f"(got {spec.start_dose})")
                continue
            entry = get_entry(spec.type)
            graded = model.truth.graded
            if entry.outcome is Outcome.SCORE and not graded:
                problems.append(f"designs[{i}].type: {spec.type} needs a graded truth "
                                f"(truth.toxicities); the truth gives p_dlt only "
                                f"(got {spec.type!r})")
                continue
            if entry.outcome is Outcome.JOINT and model.truth.efficacy is None:
                problems.append(f"designs[{i}].type: {spec.type} chooses a dose on toxicity "
                                f"and efficacy: it needs truth.efficacy (the response rate "
                                f"of each dose) (got {spec.type!r} without truth.efficacy)")
                continue
            gives_all = TRUTH_OUTCOMES + (GRADED_TRUTH_OUTCOMES if graded else ()) + (
                (Outcome.JOINT,) if model.truth.efficacy is not None else ())
            if entry.outcome not in gives_all:
                gives = ", ".join(o.value for o in TRUTH_OUTCOMES) or "no"
                problems.append(f"designs[{i}] ({name}): the design needs {entry.outcome.value} "
                                f"outcomes; the truth gives {gives} probabilities only "
                                f"(got type {spec.type!r})")
                continue
            if entry.outcome is Outcome.SCORE and spec.target is None:
                problems.append(f"designs[{i}].target: {spec.type} needs its own target on the "
                                f"normalized score scale (e.g. 0.3133 = 0.47/1.5); the "
                                f"scenario's target {model.target:g} is a DLT rate (got none)")
                continue
            size = entry.trial_size(spec, ctx)
            if size.max_n is not None and size.max_n % size.cohort_size != 0:
                where = "max_n" if spec.max_n is not None else "trial.max_n"
                problems.append(f"designs[{i}] ({name}): {where} must be a multiple of the "
                                f"cohort size {size.cohort_size} (got {size.max_n})")
                continue
            try:
                built = entry.build(spec, ctx)
            except RuleConflict as exc:
                problems.append(f"designs[{i}].{exc.field}: {exc}")
                continue
            except (ValueError, TypeError) as exc:
                problems.append(_build_problem(i, name, spec, exc))
                continue
            if entry.outcome is Outcome.SCORE:
                top = max(t.max_grade for t in model.truth.toxicities)
                given = getattr(spec, "scores", None)
                try:
                    check_scores(list(built.inner.scores), top)
                except ValueError as exc:
                    shown = given if given is not None else "the default scores"
                    msg = str(exc).rsplit(" (got ", 1)[0]
                    problems.append(f"designs[{i}].scores: {msg} (got {_short(shown)})")
                    continue
            bf_problem = conduct_problem(model.conduct, built, entry.time_to_event)
            if bf_problem:
                problems.append(f"designs[{i}] ({name}): {bf_problem} (got type "
                                f"{spec.type!r})")
                continue
            items.append(DesignItem(name, spec.type, spec, built, entry.time_to_event))
        _ = target
    if problems:
        raise ScenarioError(source, problems)
    assert model is not None
    return Scenario(model=model, designs=items, source=source, raw=raw)


#: conduct options added with issue 14: left out of the resolved scenario when not set
CONDUCT_ADDED = ("backfill", "shortfall", "costs", "review", "review_every_days",
                 "cohort_sizes", "min_followup_days", "manufacturing_capacity",
                 "screen_while_paused", "manufacture_before_slot")


def supports_backfill(design) -> bool:
    """Designs that decide on any per-dose counts (backfill adds patients at lower doses):
    interval designs (gBOIN included), the model-based CRM and BLRM, and TITE-gBOIN."""
    from ..designs.blrm import BLRM
    from ..designs.crm import CRM
    from ..designs.interval import IntervalDesign
    from ..designs.tite_gboin import TITEGBOIN
    return isinstance(design.inner, (IntervalDesign, CRM, BLRM, TITEGBOIN))


def backfill_problem(design, time_to_event: bool) -> Optional[str]:
    """Why ``design`` cannot run with ``conduct.backfill`` (None: it can)."""
    if not supports_backfill(design):
        return ("conduct.backfill needs a design that decides on any per-dose counts "
                "(interval designs such as boin, mtpi2, keyboard, i3+3, or crm, blrm); "
                "this design decides by fixed cohorts")
    return None


def conduct_problem(conduct, design, time_to_event: bool) -> Optional[str]:
    """Why ``design`` cannot run under ``conduct.backfill`` / ``conduct.shortfall`` (None:
    it can)."""
    if conduct is None:
        return None
    if conduct.backfill is not None:
        why = backfill_problem(design, time_to_event)
        if why:
            return why
    if not time_to_event:
        if conduct.cohort_sizes is not None and not supports_backfill(design):
            return ("conduct.cohort_sizes: needs a design that decides on any per-dose counts "
                    "(interval designs, crm, blrm); this design decides by fixed cohorts")
    sf = conduct.shortfall
    if sf is not None and sf.policy != "assigned":
        if sf.policy == "received" and not supports_backfill(design):
            return ("conduct.shortfall.policy: 'received' needs a design that decides on any "
                    "per-dose counts (interval designs, crm, blrm); this design decides by "
                    "fixed cohorts")
    return None


def conduct_notes(conduct, items) -> List[str]:
    """Conduct options that some designs of a run do not use (said as notes, not silently):
    the review options and ``cohort_sizes`` concern classic designs, ``min_followup_days``
    time-to-event designs."""
    if conduct is None:
        return []
    notes = []
    tte = [it.name for it in items if it.time_to_event]
    classic = [it.name for it in items if not it.time_to_event]
    for key in ("review", "review_every_days", "cohort_sizes"):
        if getattr(conduct, key) is not None and tte:
            notes.append(f"conduct.{key} applies to classic designs only; time-to-event "
                         f"designs {', '.join(tte)} decide continuously and do not use it")
    if not conduct.screen_while_paused and tte:
        notes.append(f"conduct.screen_while_paused: false applies to classic designs only; "
                     f"time-to-event designs {', '.join(tte)} may open a slot for any arrival "
                     f"and screen everyone")
    if conduct.min_followup_days is not None and classic:
        notes.append(f"conduct.min_followup_days applies to time-to-event designs only; "
                     f"classic designs {', '.join(classic)} wait for complete windows")
    return notes


def _conduct_with_doses(model: "ScenarioModel", problems: List[str]) -> "ScenarioModel":
    """Give ``conduct.shortfall`` the dose amounts of ``doses`` (required); check
    ``conduct.backfill`` against the trial's size."""
    bf = model.conduct.backfill
    if bf is not None and bf.max_per_dose > model.trial.max_n + bf.max_total:
        problems.append(f"conduct.backfill.max_per_dose: a dose can never have more than "
                        f"trial.max_n + max_total = {model.trial.max_n + bf.max_total} "
                        f"patients, so this cap would never bind (got {bf.max_per_dose})")
    sf = model.conduct.shortfall
    if sf is None:
        return model
    amounts = [None if isinstance(d, str) else d.amount for d in model.doses]
    missing = [i for i, a in enumerate(amounts) if a is None]
    if missing:
        problems.append(f"conduct.shortfall: needs doses[].amount for every dose, to find the "
                        f"true DLT rate of the amount received (got doses[{missing[0]}] "
                        f"without amount)")
        return model
    if any(b <= a for a, b in zip(amounts, amounts[1:])):
        problems.append(f"doses: amounts must increase with the dose level when "
                        f"conduct.shortfall is set (got {_short(amounts)})")
        return model
    if sf.dose_amounts is not None and list(sf.dose_amounts) != [float(a) for a in amounts]:
        problems.append(f"conduct.shortfall.dose_amounts: differs from doses[].amount; leave it "
                        f"out (got {_short(sf.dose_amounts)})")
        return model
    sf = sf.model_copy(update={"dose_amounts": [float(a) for a in amounts]})
    conduct = model.conduct.model_copy(update={"shortfall": sf})
    return model.model_copy(update={"conduct": conduct})


def _build_problem(i: int, name: str, spec: DesignSpecBase, exc: Exception) -> str:
    """A design builder's error, with the option it names as the field when its message
    starts with one (``skeleton has 3 values ...`` -> ``designs[2].skeleton (crm): ...``)."""
    msg = str(exc)
    prefix = f"design {name!r}: "
    if msg.startswith(prefix):  # the name is printed already
        msg = msg[len(prefix):]
    first = re.match(r"[A-Za-z_]\w*", msg)
    option = first.group() if first and first.group() in type(spec).model_fields else None
    where = f"designs[{i}].{option}" if option else f"designs[{i}]"
    return f"{where} ({name}): {msg}"


def scenario_json_schema() -> Dict[str, Any]:
    """JSON Schema of the scenario file (designs as a tagged union of every design type)."""
    schema = ScenarioModel.model_json_schema()
    variants = []
    defs = schema.setdefault("$defs", {})
    for t, entry in registry().items():
        sub = entry.spec_model.model_json_schema()
        for k, v in sub.pop("$defs", {}).items():
            defs[k] = v
        sub.setdefault("title", f"design {t}")
        variants.append(sub)
    schema["properties"]["designs"] = {"type": "array", "minItems": 1,
                                       "items": {"oneOf": variants}}
    return schema
