"""Sweep specs (``tune/*.yaml``): the model, its search space, scheduler, search and metric.

A spec is checked whole before any trial starts: the model must exist, every searched name
must be one of its parameters and every range must give values the model accepts, the metric
must be one the evaluation produces. Errors name the spec file and the field.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ray_apps.errors import UserError, validation_problems
from ray_apps.features.spec import load_spec
from ray_apps.models.catalog import build_model, model_class
from ray_apps.models.panel import Panel
from ray_apps.training.dataset import DataConfig
from ray_apps.training.metrics import METRICS, PortfolioConfig
from ray_apps.training.splits import SplitConfig

LOWER_IS_BETTER = {"label_mse", "turnover"}
"""Metrics a sweep minimizes by default (the rest are maximized)."""


class Distribution(BaseModel):
    """One searched parameter: exactly one of the forms below.

    Attributes:
        uniform: [low, high] floats.
        loguniform: [low, high] floats, low > 0.
        randint: [low, high] integers, high exclusive.
        choice: the values to pick from.
    """

    model_config = ConfigDict(extra="forbid")

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _one_valid_form(self) -> Distribution:
        given = [k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, loguniform, randint, choice")
        kind = given[0]
        if kind == "choice":
            return self
        low, high = getattr(self, kind)
        if not low < high:
            raise ValueError(f"{kind}: low {low} must be below high {high}")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low {low} must be above 0")
        return self

    @property
    def continuous(self) -> bool:
        """Whether it samples real numbers (``uniform``, ``loguniform``)."""
        return self.uniform is not None or self.loguniform is not None

    def bounds(self) -> list[Any]:
        """The extreme values the distribution can give (to check against the model)."""
        if self.choice is not None:
            return list(self.choice)
        if self.randint is not None:
            return [self.randint[0], self.randint[1] - 1]
        return list(self.uniform or self.loguniform)

    def to_tune(self) -> Any:
        """The Ray Tune search-space object (``tune.uniform``, ``tune.choice``, ...)."""
        from ray import tune

        if self.choice is not None:
            return tune.choice(self.choice)
        if self.randint is not None:
            return tune.randint(*self.randint)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        return tune.uniform(*self.uniform)


class ModelChoice(BaseModel):
    """The model a sweep trains and its fixed parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(BaseModel):
    """Trial scheduler: ``asha`` stops poor trials early; ``fifo`` runs every trial out.

    Attributes:
        grace_period: epochs every trial runs before it may be stopped.
        reduction_factor: ASHA keeps 1 / reduction_factor of the trials at each rung.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(2, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class SearchConfig(BaseModel):
    """Search algorithm: ``random`` (Tune's default sampler) or ``optuna`` (TPE)."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["random", "optuna"] = "random"
    seed: int = 0


class Resources(BaseModel):
    """Per trial: CPUs and GPUs (``auto``: one when the cluster has a GPU, else none)."""

    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(1.0, gt=0)
    gpu: float | Literal["auto"] = "auto"


class RegisterConfig(BaseModel):
    """Where the best model goes in the MLflow registry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    alias: str = Field("challenger", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")


class SweepSpec(BaseModel):
    """A whole sweep.

    Attributes:
        name: the sweep's name: the Tune experiment folder and the MLflow parent run.
        experiment: the MLflow experiment (created when missing).
        model: the model and its fixed parameters.
        search_space: searched parameters of the model.
        data: the bars, features and target.
        split: walk-forward validation and the held-out test period.
        portfolio: the long-short portfolio in the metrics.
        scheduler: trial scheduler.
        search: search algorithm.
        num_samples: trials to run.
        max_concurrent: most trials at once (None: as resources allow).
        resources: per trial.
        metric: validation metric to optimize, ``val_<metric>``.
        mode: ``max`` or ``min`` (None: min for label_mse and turnover, max otherwise).
        max_failures: retries of a failing trial.
        registry: where the best model is registered.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    experiment: str = "ray-apps-sweeps"
    model: ModelChoice
    search_space: dict[str, Distribution] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    portfolio: PortfolioConfig = Field(default_factory=PortfolioConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    num_samples: int = Field(8, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    resources: Resources = Field(default_factory=Resources)
    metric: str = "val_rank_ic"
    mode: Literal["max", "min"] | None = None
    max_failures: int = Field(1, ge=0)
    registry: RegisterConfig

    @property
    def metric_mode(self) -> Literal["max", "min"]:
        """The optimization direction."""
        if self.mode is not None:
            return self.mode
        return "min" if self.metric.removeprefix("val_") in LOWER_IS_BETTER else "max"


def parse_sweep_spec(raw: object, source: str = "<sweep spec>") -> SweepSpec:
    """Validates a parsed YAML document as a sweep spec, model and search space included.

    Raises:
        UserError: naming ``source`` and the field of the first problems found.
    """
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a sweep spec is a mapping (name, model, search_space, ...)")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        problems = validation_problems(error, limit=5, root="spec")
        raise UserError(f"{source}: {problems}") from None
    metrics = [f"val_{m}" for m in METRICS]
    if spec.metric not in metrics:
        raise UserError(f"{source}: metric: unknown metric {spec.metric!r}; use one of {metrics}")
    model = spec.model
    where = f"{source}: model"
    fields = model_class(model.name, where).Params.model_fields
    columns = tuple(load_spec(spec.data.feature_spec).columns)
    for key, distribution in spec.search_space.items():
        if key not in fields:
            raise UserError(
                f"{source}: search_space.{key}: {model.name} has no parameter {key!r}; "
                f"it has {sorted(fields)}"
            )
        if distribution.continuous and _takes_integers(fields[key].annotation):
            kind = "uniform" if distribution.uniform is not None else "loguniform"
            raise UserError(
                f"{source}: search_space.{key}: {kind} over an integer parameter; "
                "use randint or choice"
            )
        for value in distribution.bounds():
            build_model(
                model.name,
                {**model.params, key: value},
                columns,
                where=f"{source}: search_space.{key}={value!r} -> model",
            )
    built = build_model(model.name, model.params, columns, where=where)
    if spec.data.stream_rows and getattr(built, "input_kind", None) != "rows":
        raise UserError(
            f"{source}: data.stream_rows: only row models (mlp) train from a stream; "
            f"{model.name} reads windows, graphs or the whole panel"
        )
    return spec


def check_against_panel(spec: SweepSpec, panel: Panel) -> None:
    """Checks the model, with its fixed parameters and each searched extreme, reads ``panel``.

    Run once the data is loaded and before any run or trial exists (e.g. GAT's group edges
    need the panel's sector map).

    Raises:
        UserError: naming the field whose value the data cannot serve.
    """
    columns = panel.feature_columns
    configs = [("", spec.model.params)] + [
        (f"search_space.{key}={value!r} -> ", {**spec.model.params, key: value})
        for key, distribution in spec.search_space.items()
        for value in distribution.bounds()
    ]
    for where, params in configs:
        try:
            build_model(spec.model.name, params, columns).check_panel(panel)
        except ValueError as error:
            raise UserError(f"{where}{error}") from None


def _takes_integers(annotation: Any) -> bool:
    """Whether a parameter's type holds integers only (``int``, an int ``Literal``, ...)."""
    if annotation is int:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return bool(kinds) and all(_takes_integers(a) for a in kinds)
    return False


def load_sweep_spec(path: Path | str) -> SweepSpec:
    """Reads and validates a sweep spec file.

    Raises:
        UserError: the file is missing, is not YAML, or fails :func:`parse_sweep_spec`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: sweep spec not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from None
    return parse_sweep_spec(raw, str(path))


def with_horizon(spec: SweepSpec, horizon: int) -> SweepSpec:
    """The spec for another label horizon: names get a ``-hN`` suffix (sweep and registry).

    Raises:
        UserError: the horizon is out of range.
    """
    try:
        data = DataConfig.model_validate({**spec.data.model_dump(), "horizon": horizon})
    except ValidationError as error:
        raise UserError(f"--horizon: {validation_problems(error)}") from None
    registry = spec.registry.model_copy(update={"name": f"{spec.registry.name}-h{horizon}"})
    return spec.model_copy(
        update={"name": f"{spec.name}-h{horizon}", "data": data, "registry": registry}
    )
