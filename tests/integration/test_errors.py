"""Errors raised inside Ray tasks and actors reach the user as one line, as the CLI's own do."""

from .conftest import BIN


def test_a_user_error_in_the_offline_store_actor_is_one_line(stack, tmp_path):
    spec = tmp_path / "never-computed.yaml"
    spec.write_text('version: "never"\nfeatures:\n  - {name: sma, n: 7777}\n')
    done = stack.cli("features", "materialize", "--spec", str(spec))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "ray-apps: offline store: no feature column(s) ['sma_7777']; compute them first\n"
    )


def test_the_same_error_in_a_submitted_job_is_one_line_in_its_log(stack, tmp_path):
    spec = tmp_path / "never-computed.yaml"
    spec.write_text('version: "never"\nfeatures:\n  - {name: sma, n: 7777}\n')
    done = stack.run(
        str(BIN / "ray"), "job", "submit", "--",
        "python", "-m", "ray_apps.jobs.features", "materialize", "--spec", str(spec),
        env=stack.job_env(),
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert (
        "ray-apps: offline store: no feature column(s) ['sma_7777']; compute them first\n"
        in done.stdout
    )
    assert "Traceback" not in done.stdout + done.stderr
