"""Errors raised inside Ray tasks and actors reach the user as one line, as the CLI's own do."""

import subprocess
import sys

from .conftest import BIN

REPEATED = "ray-apps: bars repeat (symbol, ts) = (A, 2024-01-03 00:00:00+00:00)"


def bars_file(tmp_path, repeat: bool = False):
    """28 daily bars of symbol A; with ``repeat`` one of them twice (a Ray Data task refuses it)."""
    lines = ["symbol,ts,open,high,low,close,volume"]
    lines += [f"A,2024-01-{day:02d},10,11,9,10.5,100" for day in range(1, 29)]
    if repeat:
        lines.append("A,2024-01-03,10,11,9,10.5,100")
    path = tmp_path / ("repeated.csv" if repeat else "bars.csv")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_user_error_in_a_ray_data_task_is_one_line(stack, tmp_path):
    done = stack.cli(
        "features",
        "compute",
        "--engine",
        "ray",
        "--input",
        str(bars_file(tmp_path, repeat=True)),
        "--output",
        str(tmp_path / "out.parquet"),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(REPEATED), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_the_same_error_in_a_submitted_job_is_one_line_in_its_log(stack, tmp_path):
    done = stack.run(
        str(BIN / "ray"),
        "job",
        "submit",
        "--",
        "python",
        "-m",
        "ray_apps.jobs.features",
        "compute",
        "--engine",
        "ray",
        "--input",
        str(bars_file(tmp_path, repeat=True)),
        "--output",
        str(tmp_path / "out.parquet"),
        env=stack.job_env(),
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert REPEATED in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


#: A driver whose actor holds all but half a CPU of the free ones until its stdin closes, as a
#: running Serve app and stream consumers hold theirs; it says when the actor is gone.
CPU_HOLDER = """
import sys
import time
import ray
from ray.util.state import list_actors
from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import load_settings
connect_ray(load_settings())
cpus = ray.available_resources()["CPU"] - 0.5

@ray.remote(num_cpus=cpus)
class CpuHolder:
    def ready(self):
        return True

holder = CpuHolder.remote()
ray.get(holder.ready.remote())
print("held", flush=True)
sys.stdin.read()
ray.kill(holder)
alive = [("class_name", "=", "CpuHolder"), ("state", "=", "ALIVE")]
while list_actors(address=ray.get_runtime_context().gcs_address, filters=alive):
    time.sleep(0.1)
print("released", flush=True)
"""


def test_work_whose_tasks_could_never_start_is_refused_in_one_line(stack, tmp_path):
    bars = bars_file(tmp_path)  # a file and an output only: the session's store is untouched
    command = ("features", "compute", "--engine", "ray", "--input", str(bars), "--output")
    holder = subprocess.Popen(
        [sys.executable, "-c", CPU_HOLDER],
        env=stack.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = stack.cli(*command, str(tmp_path / "refused.parquet"), timeout=300)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.startswith(
            "ray-apps: features compute --engine ray: a task asks for 1 CPU(s) and running "
            "actors hold"
        ), done.stderr
        assert "CpuHolder" in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert not (tmp_path / "refused.parquet").exists()
    finally:
        holder.stdin.close()
        released = holder.stdout.readline().strip()
        holder.wait(timeout=60)
    assert released == "released"
    done = stack.cli(*command, str(tmp_path / "out.parquet"), timeout=300)  # the CPUs are back
    assert done.returncode == 0, done.stdout + done.stderr
    assert "features (ray): 28 rows" in done.stdout, done.stdout
