"""Feature specs: the YAML file that declares which features exist, by name and parameters.

```yaml
version: "1"
features:
  - {name: rsi, n: 14}
  - {name: macd, fast: 12, slow: 26, signal: 9}
```

:func:`load_spec` validates every entry against :mod:`ray_apps.features.definitions` and fails
with the file, the entry and the reason. A loaded spec compiles to a :class:`FeaturePlan`, the
arrays the kernels run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ray_apps.errors import UserError
from ray_apps.features.definitions import DEFINITIONS, Definition, Params

DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[2] / "data" / "features.yaml"


class FeatureEntry(BaseModel):
    """One declared feature: a catalogue name and its parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: Params

    @property
    def definition(self) -> Definition:
        """The catalogue entry of this feature."""
        return DEFINITIONS[self.name]

    @property
    def columns(self) -> list[str]:
        """Output column names."""
        return self.definition.columns(self.params)


class FeatureSpec(BaseModel):
    """A validated feature spec.

    Attributes:
        version: the spec's declared version; online vectors and feature rows carry it.
        features: the declared features, in output order.
    """

    model_config = ConfigDict(frozen=True)

    version: str = Field(min_length=1, max_length=64)
    features: tuple[FeatureEntry, ...] = Field(min_length=1)

    @field_validator("features")
    @classmethod
    def _unique_columns(cls, features: tuple[FeatureEntry, ...]) -> tuple[FeatureEntry, ...]:
        seen: set[str] = set()
        for entry in features:
            for column in entry.columns:
                if column in seen:
                    raise ValueError(f"column {column!r} is declared twice")
                seen.add(column)
        return features

    @property
    def columns(self) -> list[str]:
        """Every output column, in order."""
        return [column for entry in self.features for column in entry.columns]

    @property
    def warmup(self) -> int:
        """Bars before every feature of the spec is defined."""
        return max(entry.definition.warmup(entry.params) for entry in self.features)

    @property
    def fingerprint(self) -> str:
        """A short hash of the features and parameters (not the version label)."""
        canonical = json.dumps(
            [[e.name, e.params.model_dump()] for e in self.features], sort_keys=True
        )
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    @cached_property
    def plan(self) -> FeaturePlan:
        """The compiled plan the kernels run."""
        return FeaturePlan.compile(self)


@dataclass(frozen=True)
class FeaturePlan:
    """A spec compiled for the kernels.

    Attributes:
        plan: int64 rows ``(kind, state offset, output offset)``.
        params: float64 rows of up to three parameters.
        state_size: floats of state per symbol.
        columns: output columns, the kernels' output order.
    """

    plan: np.ndarray
    params: np.ndarray
    state_size: int
    columns: tuple[str, ...]

    @classmethod
    def compile(cls, spec: FeatureSpec) -> FeaturePlan:
        """Lays out state and outputs for every feature of ``spec``."""
        plan = np.zeros((len(spec.features), 3), dtype=np.int64)
        params = np.zeros((len(spec.features), 3), dtype=np.float64)
        state = output = 0
        for i, entry in enumerate(spec.features):
            definition = entry.definition
            packed = entry.params.packed()
            plan[i] = (definition.kind, state, output)
            params[i, : len(packed)] = packed
            state += definition.state_size(entry.params)
            output += len(entry.columns)
        return cls(plan, params, state, tuple(spec.columns))


def parse_spec(raw: Any, source: str = "<spec>") -> FeatureSpec:
    """Validates a spec already read from YAML.

    Raises:
        UserError: naming ``source``, the entry and the reason.
    """
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a feature spec is a mapping with 'version' and 'features'")
    unknown = set(raw) - {"version", "features"}
    if unknown:
        raise UserError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: version, features")
    entries = raw.get("features")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{source}: 'features' must be a non-empty list")
    parsed = [_parse_entry(entry, i, source) for i, entry in enumerate(entries)]
    try:
        return FeatureSpec(version=str(raw.get("version", "")), features=tuple(parsed))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError(f"{source}: {where}: {first['msg']}") from None


def _parse_entry(entry: Any, index: int, source: str) -> FeatureEntry:
    where = f"{source}: features[{index}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise UserError(f"{where}: each feature is a mapping with a 'name'")
    values = dict(entry)
    name = values.pop("name")
    definition = DEFINITIONS.get(name)
    if definition is None:
        raise UserError(
            f"{where}: unknown feature {name!r}; known: {', '.join(sorted(DEFINITIONS))}"
        )
    try:
        params = definition.params(**values)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "parameters"
        raise UserError(f"{where} ({name}): {field}: {first['msg']}") from None
    return FeatureEntry(name=name, params=params)


def load_spec(path: Path | str | None = None) -> FeatureSpec:
    """Reads and validates a YAML feature spec (the packaged default when ``path`` is None).

    Raises:
        UserError: the file is missing, is not YAML, or declares an invalid feature.
    """
    path = Path(path) if path is not None else DEFAULT_SPEC_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: feature spec not found") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {error}") from None
    return parse_spec(raw, str(path))
