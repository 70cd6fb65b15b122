"""Sweep specs: every shipped spec loads, and each kind of mistake names its field."""

from pathlib import Path

import pytest
import yaml

from ray_apps.errors import UserError
from ray_apps.models.catalog import MODELS
from ray_apps.training.sweep_spec import load_sweep_spec, parse_sweep_spec

TUNE = Path(__file__).resolve().parents[3] / "tune"


def test_every_shipped_spec_loads_and_every_model_has_one() -> None:
    specs = [load_sweep_spec(path) for path in sorted(TUNE.glob("*.yaml"))]
    assert {spec.model.name for spec in specs} == set(MODELS)
    for spec in specs:
        assert spec.metric == "val_rank_ic" and spec.metric_mode == "max"


def base() -> dict:
    return yaml.safe_load((TUNE / "mlp.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["model"].update(name="xgboost"), r"model.name: unknown model 'xgboost'"),
        (
            lambda s: s["search_space"].update(hidden={"randint": [64, 16]}),
            r"search_space.hidden: .*randint: low 64 must be below high 16",
        ),
        (
            lambda s: s["search_space"].update(learning_rate={"loguniform": [0, 1]}),
            r"search_space.learning_rate.*low 0.0 must be above 0",
        ),
        (
            lambda s: s["search_space"].update(hidden={"uniform": [1, 2], "choice": [3]}),
            r"search_space.hidden.*exactly one of",
        ),
        (lambda s: s.update(metric="val_accuracy"), r"metric: unknown metric 'val_accuracy'"),
        (
            lambda s: s["search_space"].update(lookback={"choice": [5]}),
            r"search_space.lookback: mlp has no parameter 'lookback'",
        ),
        (
            lambda s: s["search_space"].update(dropout={"uniform": [0.0, 1.5]}),
            r"search_space.dropout=1.5 -> model.params \(mlp\): dropout: Input should be less",
        ),
        (lambda s: s["model"]["params"].update(epochs=0), r"model.params \(mlp\): epochs"),
        (
            lambda s: s["search_space"].update(hidden={"uniform": [8, 64]}),
            r"search_space.hidden: uniform over an integer parameter; use randint or choice$",
        ),
        (
            lambda s: s["search_space"].update(batch_size={"loguniform": [32, 512]}),
            r"search_space.batch_size: loguniform over an integer parameter; use randint or",
        ),
        (
            lambda s: s.update(
                model={"name": "momentum"}, search_space={"sign": {"uniform": [-1, 1]}}
            ),
            r"search_space.sign: uniform over an integer parameter",
        ),
        (
            lambda s: s["model"].update(name="no_such_module:Model"),
            r"model.name: cannot import 'no_such_module'",
        ),
        (lambda s: s.update(schedular={"type": "asha"}), r"schedular: Extra inputs"),
        (lambda s: s["scheduler"].update(type="hyperband"), r"scheduler.type: Input should be"),
        (lambda s: s.pop("registry"), r"registry: Field required"),
        (lambda s: s["split"].update(test_fraction=1.5), r"split.test_fraction"),
    ],
)
def test_spec_errors_name_the_field(change, message: str) -> None:
    raw = base()
    change(raw)
    with pytest.raises(UserError, match=message) as error:
        parse_sweep_spec(raw, "tune/x.yaml")
    assert str(error.value).startswith("tune/x.yaml: ")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sweep spec not found"):
        load_sweep_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_sweep_spec(bad)
