"""Every model by the name specs use, and how to build one from a parameter dict.

Besides the names of :data:`MODELS`, a spec may name a model of its own as
``package.module:Class`` (a :class:`ScoreModel` subclass importable on every Ray worker).
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from ray_apps.errors import UserError, validation_problems
from ray_apps.models.base import ScoreModel
from ray_apps.models.baselines import MomentumModel, RidgeModel
from ray_apps.models.neural import GATModel, LSTMModel, MLPModel, TransformerModel

MODELS: dict[str, type[ScoreModel]] = {
    model.name: model
    for model in (MLPModel, LSTMModel, TransformerModel, GATModel, RidgeModel, MomentumModel)
}
"""Model classes by name."""


def model_class(name: str, where: str = "model") -> type[ScoreModel]:
    """The model class named ``name``: a key of :data:`MODELS` or ``module:Class``.

    Raises:
        UserError: naming ``where``: unknown name, module not importable, or not a model.
    """
    if name in MODELS:
        return MODELS[name]
    module_name, colon, class_name = name.partition(":")
    if not colon:
        raise UserError(
            f"{where}.name: unknown model {name!r}; known: {sorted(MODELS)} "
            "(or package.module:Class)"
        )
    try:
        found = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError as error:
        raise UserError(f"{where}.name: cannot import {module_name!r} ({error})") from None
    if not (isinstance(found, type) and issubclass(found, ScoreModel)):
        raise UserError(f"{where}.name: {name!r} is not a ScoreModel subclass")
    return found


def build_model(
    name: str, params: dict[str, Any], feature_columns: tuple[str, ...], where: str = "model"
) -> ScoreModel:
    """An untrained model from its name and parameters.

    Args:
        name: a key of :data:`MODELS` or ``package.module:Class``.
        params: the model's parameters (defaults for the rest).
        feature_columns: the features it reads.
        where: names the caller's field in error messages (e.g. ``tune/lstm.yaml: model``).

    Raises:
        UserError: unknown model, or parameters that its ``Params`` refuse.
    """
    model = model_class(name, where)
    try:
        return model(model.Params(**params), tuple(feature_columns))
    except ValidationError as error:
        raise UserError(f"{where}.params ({name}): {validation_problems(error)}") from None
    except ValueError as error:
        raise UserError(f"{where}.params ({name}): {error}") from None
