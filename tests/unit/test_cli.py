import os
import subprocess
import sys
from pathlib import Path

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

from ray_apps.cli import stack as cli_stack
from ray_apps.cli.main import main
from ray_apps.errors import UserError
from ray_apps.jobs import run_job


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


def _one_line(err: str) -> str:
    assert err.startswith("ray-apps: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv", [["--help"], ["stack", "--help"], ["stack", "logs", "--help"]])
def test_help_works_with_a_bad_setting(argv, capsys, monkeypatch):
    monkeypatch.setenv("RAY_APPS_REDIS__PORT", "abc")
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert "usage: ray-apps" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["stack", "status"], ["stack", "env"], ["data", "symbols"]])
def test_a_bad_setting_is_one_line_naming_it_and_its_variable(argv, capsys, monkeypatch):
    monkeypatch.setenv("RAY_APPS_REDIS__PORT", "abc")
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert "setting redis.port (RAY_APPS_REDIS__PORT): Input should be a valid integer" in err


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("RAY_APPS_REDIS__PROT", "RAY_APPS_REDIS__PROT: no such setting (redis has managed, host,"),
        ("RAY_APPS_STAT_DIR", "RAY_APPS_STAT_DIR: no such setting (settings are state_dir,"),
    ],
)
def test_a_misspelt_variable_is_one_line_naming_it(variable, message, capsys, monkeypatch):
    monkeypatch.setenv(variable, "1")
    assert main(["stack", "env"]) == 2
    assert message in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "ray_apps.cli.main", "--help"],
        ["-m", "ray_apps.jobs.ingest", "--help"],
        ["-m", "ray_apps.cli.main", "stack", "status"],
        ["-m", "ray_apps.jobs.ingest", "--source", "arch:sp500"],
    ],
)
def test_entry_points_with_a_bad_setting_print_no_traceback(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_APPS_")}
    env |= {"RAY_APPS_REDIS__PORT": "abc", "RAY_APPS_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, check=False
    )
    assert "Traceback" not in done.stderr
    if "--help" in command:
        assert done.returncode == 0 and done.stdout.startswith("usage: ")
    else:
        assert done.returncode == 2
        assert _one_line(done.stderr).startswith(
            "ray-apps: setting redis.port (RAY_APPS_REDIS__PORT): "
        )


def test_an_option_pydantic_refuses_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_APPS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RAY_APPS_RAY__PORT", "1")  # nothing listens: never reaches Ray
    assert main(["features", "compute", "--from-store", "--parallelism", "0"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "parallelism" in err and "greater than or equal to 1" in err


def _raises(exc: BaseException):
    def handler(args):
        raise exc

    return handler


def _remote(cause: BaseException, function: str = "OfflineStore.materialize") -> BaseException:
    """What ``ray.get`` raises when a task or actor method raised ``cause``."""
    trace = (
        'Traceback (most recent call last):\n  File "offline_actor.py", line 9, in f\n'
        f"{type(cause).__name__}: {cause}"
    )
    error = RayTaskError(function, trace, cause, f"ray::{function}", 7, "127.0.0.1")
    return error.as_instanceof_cause()


def test_a_user_error_raised_in_a_ray_actor_is_its_one_line(capsys, monkeypatch):
    error = _remote(UserError("offline store: no feature column(s) ['rsi_14']; compute them"))
    monkeypatch.setattr(cli_stack, "_down", _raises(error))
    assert main(["stack", "down"]) == 2
    err = capsys.readouterr().err
    assert err == "ray-apps: offline store: no feature column(s) ['rsi_14']; compute them\n"


def test_a_user_error_through_nested_ray_tasks_is_its_one_line(capsys, monkeypatch):
    inner = RayTaskError("inner", "Traceback ...\nUserError: bad", UserError("bad input"))
    monkeypatch.setattr(cli_stack, "_down", _raises(_remote(inner, "outer")))
    assert main(["stack", "down"]) == 2
    assert capsys.readouterr().err == "ray-apps: bad input\n"


def test_another_error_in_a_ray_task_is_one_line_and_status_1(capsys, monkeypatch):
    monkeypatch.delenv("RAY_APPS_DEBUG", raising=False)
    error = _remote(ZeroDivisionError("division by zero\nmore"), "features.compute_block")
    monkeypatch.setattr(cli_stack, "_down", _raises(error))
    assert main(["stack", "down"]) == 1
    assert _one_line(capsys.readouterr().err) == (
        "ray-apps: features.compute_block failed in a Ray task: ZeroDivisionError: "
        "division by zero (set RAY_APPS_DEBUG=1 for the traceback)\n"
    )


def test_ray_apps_debug_adds_the_remote_traceback(capsys, monkeypatch):
    monkeypatch.setenv("RAY_APPS_DEBUG", "1")
    monkeypatch.setattr(cli_stack, "_down", _raises(_remote(ZeroDivisionError("boom"))))
    assert main(["stack", "down"]) == 1
    err = capsys.readouterr().err
    assert 'File "offline_actor.py", line 9' in err
    assert err.splitlines()[-1].startswith("ray-apps: OfflineStore.materialize failed")


def test_a_dead_actor_is_one_line(capsys, monkeypatch):
    died = ActorDiedError()
    monkeypatch.setattr(cli_stack, "_down", _raises(died))
    assert main(["stack", "down"]) == 1
    assert _one_line(capsys.readouterr().err).startswith("ray-apps: a Ray actor failed: ")


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(cli_stack, "_down", _raises(KeyError("bug")))
    with pytest.raises(KeyError):
        main(["stack", "down"])


def test_a_job_turns_a_remote_user_error_into_one_line(capsys):
    def run(args, settings):
        raise _remote(UserError("bars: nothing stored yet"))

    assert run_job("ray_apps.jobs.x", "A job.", lambda parser: None, run, []) == 2
    assert capsys.readouterr().err == "ray-apps: bars: nothing stored yet\n"


def test_stack_env_never_prints_a_token_from_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_APPS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RAY_APPS_RAY__MANAGED", "false")
    monkeypatch.setenv("RAY_APPS_RAY__AUTH_TOKEN", "tok-3f9a-very-secret")
    assert main(["stack", "env"]) == 0
    out = capsys.readouterr().out
    assert "very-secret" not in out
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    token_file = Path(exports["RAY_AUTH_TOKEN_PATH"])
    assert token_file.read_text() == "tok-3f9a-very-secret"
    assert token_file.stat().st_mode & 0o077 == 0
    assert exports["RAY_AUTH_MODE"] == "token"
