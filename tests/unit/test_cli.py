import pytest

from ray_apps.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "--source", "nonsense"], "unknown source 'nonsense'"),
        (["ingest", "--source", "synthetic:x:1"], "bad source"),
        (["ingest", "--source", "/no/such/file.csv"], None),
        (["ingest", "--source", "arch:sp500", "--interval", "daily"], "interval 'daily'"),
        (["sweep", "tune/none.yaml"], "tune/none.yaml: sweep spec not found"),
        (["sweep", "tune/mlp.yaml", "--horizon", "0"], "--horizon: horizon: Input should be"),
        (["sweep", "tune/mlp.yaml", "--num-samples", "0"], "--num-samples: 0 is not"),
        (["sweep", "tune/mlp.yaml"], "is not reachable"),  # checked before any data is read
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_APPS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RAY_APPS_RAY__PORT", "1")  # nothing listens: never reaches Ray
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ray-apps: ") and err.count("\n") == 1
    if message:
        assert message in err


def test_unreachable_head_is_a_user_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_APPS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RAY_APPS_RAY__PORT", "1")
    assert main(["data", "symbols"]) == 2
    assert "is not reachable; run `ray-apps stack up`" in capsys.readouterr().err
