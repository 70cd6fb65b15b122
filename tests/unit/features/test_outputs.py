"""Feature Parquet files: float columns written plain (no dictionary, no compression)."""

import pyarrow.parquet as pq

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
