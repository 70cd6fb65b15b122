"""Feature specs: the default columns and errors that name the file, entry and reason."""

from pathlib import Path

import pytest

from ray_apps.errors import UserError
from ray_apps.features.spec import load_spec

ISSUE_COLUMNS = [
    "logret_1",
    "sma_20",
    "ema_20",
    "rsi_14",
    "macd_12_26_9",
    "macd_signal_12_26_9",
    "macd_hist_12_26_9",
    "bb_upper_20_2",
    "bb_middle_20_2",
    "bb_lower_20_2",
    "bb_pctb_20_2",
    "bb_width_20_2",
    "atr_14",
    "obv",
    "vol_20",
    "zclose_20",
    "zvolume_20",
    "stoch_k_14_3",
    "stoch_d_14_3",
    "adx_14",
]


def test_default_spec_has_the_named_columns():
    spec = load_spec()
    assert set(ISSUE_COLUMNS) <= set(spec.columns)
    assert spec.version == "1"
    assert spec.warmup == 33  # MACD(12, 26, 9): 25 + 8 bars


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version: "1"\nfeatures:\n  - {name: nope}\n', r"features\[0\]: unknown feature 'nope'"),
        ('version: "1"\nfeatures:\n  - {name: rsi, n: 1}\n', r"features\[0\] \(rsi\): n: "),
        ('version: "1"\nfeatures:\n  - {name: sma, m: 3}\n', r"\(sma\): m: Extra inputs"),
        (
            'version: "1"\nfeatures:\n  - {name: macd, fast: 30}\n',
            r"\(macd\): .*fast \(30\) must be below slow \(26\)",
        ),
        (
            'version: "1"\nfeatures:\n  - {name: sma, n: 5}\n  - {name: sma, n: 5}\n',
            "column 'sma_5' is declared twice",
        ),
        ('version: "1"\nfeatures: []\n', "'features' must be a non-empty list"),
        ("features: [ {name: sma\n", "not valid YAML"),
        ('version: "1"\nfeature: []\n', r"unknown key\(s\) \['feature'\]"),
    ],
)
def test_invalid_specs_fail_at_load_with_path_and_reason(tmp_path: Path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        load_spec(path)
    assert str(error.value).startswith(str(path))


def test_missing_spec_file(tmp_path: Path):
    with pytest.raises(UserError, match="feature spec not found"):
        load_spec(tmp_path / "absent.yaml")
