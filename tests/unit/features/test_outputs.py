"""Feature Parquet files: float columns written plain (no dictionary, no compression)."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_apps.errors import UserError
from ray_apps.features import compute
from ray_apps.features.compute import ComputeRequest, compute_features
from ray_apps.features.sources import BarsInput
from ray_apps.features.spec import load_spec
from ray_apps.marketdata.synthetic import SyntheticSpec, generate_bars

SPEC = load_spec()


def test_compute_features_writes_features_without_dictionaries_or_compression(tmp_path):
    bars = tmp_path / "bars.parquet"
    generate_bars(SyntheticSpec(n_symbols=2, n_bars=300, interval="15m")).to_parquet(bars)
    out = tmp_path / "features.parquet"
    request = ComputeRequest(engine="incremental", source=BarsInput(path=bars), output=out)
    compute_features(request, SPEC, None, echo=lambda line: None)
    group = pq.ParquetFile(out).metadata.row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert "RLE_DICTIONARY" in chunks["symbol"].encodings
    for column in SPEC.columns:
        assert "RLE_DICTIONARY" not in chunks[column].encodings, column
        assert chunks[column].compression == "UNCOMPRESSED", column


def test_a_failed_run_leaves_the_output_path_as_it_was(tmp_path, monkeypatch):
    bars = tmp_path / "bars.parquet"
    generate_bars(SyntheticSpec(n_symbols=2, n_bars=300, interval="15m")).to_parquet(bars)
    out = tmp_path / "features.parquet"
    out.write_text("an older file")
    request = ComputeRequest(engine="incremental", source=BarsInput(path=bars), output=out)
    engine = compute.ENGINES["incremental"]

    def fails_after_a_block(run):
        yield next(iter(engine(run)))
        raise UserError("stopped mid-run")

    monkeypatch.setitem(compute.ENGINES, "incremental", fails_after_a_block)
    with pytest.raises(UserError, match="stopped mid-run"):
        compute_features(request, SPEC, None, echo=lambda line: None)
    assert out.read_text() == "an older file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.parquet", "features.parquet"]
    monkeypatch.setitem(compute.ENGINES, "incremental", engine)
    compute_features(request, SPEC, None, echo=lambda line: None)
    assert pq.read_metadata(out).num_rows == 600


def test_a_relative_input_path_is_read_from_the_working_folder_by_any_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert BarsInput(path="bars.csv").path == tmp_path / "bars.csv"
    assert BarsInput(path="~/bars.csv").path == Path.home() / "bars.csv"
