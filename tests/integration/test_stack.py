"""`ray-apps stack`: real services started, checked and stopped by the project itself."""

import json
import socket
import sys
import time

import psutil
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ray_apps.stores.objects import object_store_client

from .conftest import BIN, Stack, stack_overrides

SERVICES = ("s3", "redis", "ray", "kafka", "mlflow")


def status_rows(stack: Stack) -> dict[str, str]:
    out = stack.ok("stack", "status")
    return {line.split()[0]: line for line in out.splitlines()[1:]}


def test_status_lists_every_service_healthy_and_no_secret(stack):
    rows = status_rows(stack)
    for name in SERVICES:
        assert " healthy " in rows[name], rows[name]
    assert "chdb://" in rows["clickhouse"]
    secrets = json.loads((stack.settings.state_dir / "secrets.json").read_text())
    token = stack.settings.ray_token_path.read_text().strip()
    everything = stack.ok("stack", "status") + stack.ok("stack", "env")
    for secret in (*secrets.values(), token):
        assert secret not in everything


WORKER_ENV = """
import json, os, ray
from ray_apps._private.ray_cluster import connect_ray
from ray_apps.config import load_settings
connect_ray(load_settings())
print("ENV", json.dumps(ray.get(ray.remote(lambda: dict(os.environ)).remote())))
"""


def test_ray_workers_and_job_drivers_hold_no_credential(stack):
    worker = stack.run(sys.executable, "-c", WORKER_ENV)
    assert worker.returncode == 0, worker.stderr
    job = stack.run(
        str(BIN / "ray"),
        "job",
        "submit",
        "--",
        "python",
        "-c",
        "import json, os; print('ENV', json.dumps(dict(os.environ)))",
        env=stack.job_env(),
    )
    assert job.returncode == 0, job.stdout + job.stderr
    secrets = json.loads((stack.settings.state_dir / "secrets.json").read_text())
    for output in (worker.stdout, job.stdout):
        env = json.loads(next(line for line in output.splitlines() if line.startswith("ENV "))[4:])
        assert env["RAY_APPS_STATE_DIR"] == str(stack.settings.state_dir)  # the sanity check
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env.keys()
        for secret in secrets.values():
            assert secret not in json.dumps(env)


def test_credentials_and_token_files_are_private(stack):
    for path in (stack.settings.state_dir / "secrets.json", stack.settings.ray_token_path):
        assert path.stat().st_mode & 0o077 == 0


def test_up_again_reports_the_running_services(stack):
    before = json.loads((stack.settings.state_dir / "stack.json").read_text())
    out = stack.ok("stack", "up")
    for name in SERVICES:
        assert f"{name:7} already running (pid {before[name]['pid']})" in out
    assert json.loads((stack.settings.state_dir / "stack.json").read_text()) == before


def test_everything_listens_on_loopback_only(stack):
    pids = {
        p["pid"] for p in json.loads((stack.settings.state_dir / "stack.json").read_text()).values()
    }
    ours = set()
    for pid in pids:
        leader = psutil.Process(pid)
        ours |= {leader.pid, *(c.pid for c in leader.children(recursive=True))}
    listening = [
        c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.pid in ours
    ]
    assert listening
    exposed = [c for c in listening if c.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not exposed, [(psutil.Process(c.pid).name(), c.laddr) for c in exposed]


def test_wrong_s3_credentials_give_one_line(stack):
    env = stack.env | {"RAY_APPS_S3__SECRET_KEY": "not-the-secret"}
    done = stack.cli("stack", "up", env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "rejected the credentials" in done.stderr
    assert "RAY_APPS_S3__SECRET_KEY" in done.stderr


def test_port_taken_by_another_process_is_one_clear_line_and_starts_nothing(tmp_path):
    overrides = stack_overrides(tmp_path / "state")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", overrides["redis"]["port"]))
        squatter.listen()
        other = Stack(overrides)
        done = other.cli("stack", "up")
    port = overrides["redis"]["port"]
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"ray-apps: port {port} (redis redis) is taken by another process; stop it or set "
        "RAY_APPS_REDIS__PORT (and the other redis ports) to free ones"
    )
    assert not (tmp_path / "state" / "stack.json").exists()


def test_a_service_failing_at_start_rolls_back_the_others(tmp_path):
    overrides = stack_overrides(tmp_path / "state")
    overrides["redis"]["host"] = "192.0.2.123"  # not an address of this machine: bind fails
    other = Stack(overrides)
    done = other.cli("stack", "up")
    assert done.returncode == 2
    assert "redis exited during start-up" in done.stderr
    assert "redis.log" in done.stderr
    pids = json.loads((tmp_path / "state" / "stack.json").read_text())
    assert pids == {}
    rows = status_rows(other)
    assert all(" stopped " in rows[name] for name in SERVICES)


def test_data_survives_a_restart(stack):
    settings = stack.settings
    stack.ok("ingest", "--source", "arch:nasdaq")
    before = [r for r in stack.records("symbols") if r["symbol"] == "NASDAQ"]
    online = redis.Redis(
        port=settings.redis.port, password=settings.redis.password.get_secret_value()
    )
    online.set("restart-check", "kept")
    objects = object_store_client(settings)
    objects.put_object(
        settings.s3.data_bucket, "restart-check.txt", __import__("io").BytesIO(b"kept"), 4
    )
    admin = AdminClient({"bootstrap.servers": settings.kafka.servers})
    admin.create_topics([NewTopic("restart-check", 1, 1)])["restart-check"].result(30)
    producer = Producer({"bootstrap.servers": settings.kafka.servers})
    for i in range(3):
        producer.produce("restart-check", f"message {i}".encode())
    assert producer.flush(30) == 0

    stack.ok("stack", "down")
    assert all(
        " stopped " in line
        for line in status_rows(stack).values()
        if not line.startswith("clickhouse")
    )
    stack.ok("stack", "up")

    assert [r for r in stack.records("symbols") if r["symbol"] == "NASDAQ"] == before
    assert online.get("restart-check") == b"kept"
    assert objects.get_object(settings.s3.data_bucket, "restart-check.txt").read() == b"kept"
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.servers,
            "group.id": "check",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition("restart-check", 0, 0)])
    got, deadline = [], time.monotonic() + 60
    while len(got) < 3 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            got.append(message.value().decode())
    consumer.close()
    assert got == ["message 0", "message 1", "message 2"]


@pytest.mark.parametrize("service", ["redis", "s3"])
def test_logs_show_the_service_output(stack, service):
    assert stack.ok("stack", "logs", service, "-n", "5").strip()
