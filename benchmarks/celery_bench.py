"""fluxmail.celery throughput: 1, 2 and 4 worker processes against BulkSender in one process.

Everything runs on 127.0.0.1: Postfix's ``smtp-sink`` as the SMTP server (as in
``bench.py``), a throwaway ``redis-server`` as broker and claim store, and Celery workers
started by this script (``celery -A celery_bench worker --pool prefork -c N``: one worker,
N pool processes, each with its own SMTP connection). Two scenarios:

    loopback   the server on loopback: what the machine's CPUs allow
    latency    through ``_proxy.py`` adding --latency-ms of round trip (default 20 ms), as
               with a real ESP: one connection is bound by round trips, workers multiply it

Contenders, all sending the same small text message:

    bulk        BulkSender(mailer).send_batch(list): one process, one pipelined connection
    bulk-async4 BulkSender.send_batch_async(connections=4): one process, a pool of 4
    celery-N    fluxmail.celery with N pool processes: the messages are enqueued with
                enqueue_batch (not timed: the queue is filled first, chunks of 500),
                claimed in Redis a chunk at a time, sent pipelined, recorded

A Celery contender's rate is measured between the first and the last recorded outcome
(``updated_at`` of the records), so worker start-up is not counted; BulkSender's is the
wall time of ``send_batch``. For each Celery contender the script also prints, per
message, the Redis commands the server ran (``INFO commandstats``, enqueueing excluded)
and the Redis round trips the workers waited for: every worker process counts the times
one of its Redis connections read a reply after having sent something (redis-py's
``send_packed_command`` then ``read_response``; kombu's included; commands sent without
waiting and read in one go count once), and adds its count to a Redis key when it stops.
Two more columns say where a pool process's time goes, per message: the CPU its tasks
took, and how long it waited between the end of one task and the start of the next
(Celery's consumer handing it the next chunk). Every worker, sink, proxy and redis-server
is stopped at the end; every loop is bounded
in count and time.

    apt-get install -y postfix redis-server
    pip install -e ".[celery]"
    python benchmarks/celery_bench.py            # ~3 minutes
    python benchmarks/celery_bench.py --quick    # < 1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
QUEUE = "fluxmail-bench"


def message(i: int) -> dict[str, Any]:
    return {
        "subject": f"Benchmark message {i}",
        "recipients": [f"user{i}@example.com"],
        "body": "Hello,\n\nthis is a benchmark message of a few hundred bytes.\n" * 8,
        "sender": "bench@example.com",
    }


# --- the worker side: `celery -A celery_bench worker` imports this module -----------------

ROUND_TRIPS_KEY = "fluxmail-bench:round-trips"


def count_round_trips(redis_url: str) -> None:
    """In a worker process: count Redis round trips (see the module docstring) and add
    the count to ROUND_TRIPS_KEY when the process stops."""
    import redis
    from celery import signals
    from redis.connection import AbstractConnection

    counted = {"round_trips": 0}
    send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

    def sending(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._bench_sent = True
        return send(self, *args, **kwargs)

    def reading(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_bench_sent", False):
            self._bench_sent = False
            counted["round_trips"] += 1
        return read(self, *args, **kwargs)

    AbstractConnection.send_packed_command = sending  # type: ignore[method-assign]
    AbstractConnection.read_response = reading  # type: ignore[method-assign]

    def report(**_: Any) -> None:
        total, counted["round_trips"] = counted["round_trips"], 0
        client = redis.Redis.from_url(redis_url)
        client.incrby(ROUND_TRIPS_KEY, total)
        client.close()

    signals.worker_process_shutdown.connect(report, weak=False)
    signals.worker_shutdown.connect(report, weak=False)


TASK_TIMES_KEY = "fluxmail-bench:task-times"


def time_tasks(redis_url: str) -> None:
    """In a pool process: add up the CPU time its tasks take and the time it waits
    between the end of one task and the start of the next (Celery handing it over), and
    add both (microseconds) to TASK_TIMES_KEY when the process stops."""
    import redis
    from celery import signals

    times = {"cpu": 0.0, "between": 0.0, "ended": 0.0, "cpu_at": 0.0}

    def started(**_: Any) -> None:
        if times["ended"]:
            times["between"] += time.perf_counter() - times["ended"]
        times["cpu_at"] = time.process_time()

    def ended(**_: Any) -> None:
        times["cpu"] += time.process_time() - times["cpu_at"]
        times["ended"] = time.perf_counter()

    def report(**_: Any) -> None:
        client = redis.Redis.from_url(redis_url)
        client.hincrby(TASK_TIMES_KEY, "cpu", int(times["cpu"] * 1e6))
        client.hincrby(TASK_TIMES_KEY, "between", int(times["between"] * 1e6))
        client.close()

    signals.task_prerun.connect(started, weak=False)
    signals.task_postrun.connect(ended, weak=False)
    signals.worker_process_shutdown.connect(report, weak=False)


if os.environ.get("FLUXMAIL_BENCH_REDIS"):
    from celery import Celery

    from fluxmail.celery import register

    count_round_trips(os.environ["FLUXMAIL_BENCH_REDIS"])
    time_tasks(os.environ["FLUXMAIL_BENCH_REDIS"])

    app = Celery("fluxmail_bench", broker=os.environ["FLUXMAIL_BENCH_REDIS"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    fleet = register(app)  # the mailer: FluxMail.from_env() in each pool process


# --- the driver -------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing: apt-get install -y redis-server")
    import bench

    port = bench.free_port()
    with tempfile.TemporaryDirectory(prefix="fluxmail-bench-redis-") as folder:
        command = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly"]
        command += ["no", "--dir", folder, "--logfile", "redis.log"]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            bench.wait_listening(port)
            yield f"redis://{HOST}:{port}/0"
        finally:
            bench._stop(proc)


@contextlib.contextmanager
def celery_worker(redis_url: str, smtp_port: int, processes: int) -> Iterator[None]:
    env = dict(os.environ, FLUXMAIL_BENCH_REDIS=redis_url, FLUXMAIL_HOST=HOST)
    env.update(FLUXMAIL_PORT=str(smtp_port), FLUXMAIL_TIMEOUT="30")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "-Q", QUEUE]
    command += ["--pool", "prefork", "--concurrency", str(processes), "--loglevel", "WARNING"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = tempfile.NamedTemporaryFile(prefix="fluxmail-bench-worker-", suffix=".log")  # noqa: SIM115
    proc = subprocess.Popen(
        command,
        cwd=HERE,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
    except BaseException:
        log.flush()
        print(Path(log.name).read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def time_bulk(port: int, count: int) -> float:
    from fluxmail import BulkSender, FluxMail

    mailer = FluxMail(host=HOST, port=port, timeout=30)
    BulkSender(mailer).send_batch([message(i) for i in range(max(1, count // 10))], progress=False)
    messages = [message(i) for i in range(count)]
    started = time.perf_counter()
    result = BulkSender(mailer).send_batch(messages, progress=False)
    elapsed = time.perf_counter() - started
    assert result["sent"] == count, result
    return count / elapsed


def time_bulk_async(port: int, count: int, connections: int = 4) -> float:
    from fluxmail import BulkSender, FluxMail

    mailer = FluxMail(host=HOST, port=port, timeout=30)
    sender = BulkSender(mailer, connections=connections)
    messages = [message(i) for i in range(count)]
    started = time.perf_counter()
    result = asyncio.run(sender.send_batch_async(messages, progress=False))
    elapsed = time.perf_counter() - started
    assert result["sent"] == count, result
    return count / elapsed


def redis_commands(client: Any) -> int:
    """Commands Redis has run so far (``INFO commandstats``), the INFO calls excluded."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def time_celery(redis_url: str, port: int, count: int, processes: int) -> dict[str, float]:
    """Messages/s between the first and the last outcome, the enqueue rate, and Redis
    commands and round trips per message on the workers' side."""
    import redis
    from celery import Celery

    from fluxmail.celery import register

    app = Celery("fluxmail_bench_client", broker=redis_url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)
    fleet = register(app)  # only its store is used here, to read the results
    client = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    ids = [i for i in fleet.enqueue_batch([message(i) for i in range(count)]) if i]
    enqueue_rate = count / (time.perf_counter() - started)
    client.delete(ROUND_TRIPS_KEY, TASK_TIMES_KEY)
    before = redis_commands(client)
    with celery_worker(redis_url, port, processes):
        results = wait_quietly(fleet, ids, timeout=60 + count / 5)
        commands = redis_commands(client) - before
    round_trips = int(client.get(ROUND_TRIPS_KEY) or 0)
    task_times = {k.decode(): int(v) for k, v in client.hgetall(TASK_TIMES_KEY).items()}
    client.close()
    fleet.close()
    statuses = {r["status"] for r in results.values()}
    if statuses != {"accepted"}:
        raise RuntimeError(f"celery-{processes}: not all accepted: {statuses}")
    times = sorted(r["updated_at"] for r in results.values())
    return {
        "rate": (count - 1) / (times[-1] - times[0]),
        "enqueue": enqueue_rate,
        "commands": commands / count,
        "round_trips": round_trips / count,
        "task_cpu_us": task_times.get("cpu", 0) / count,
        "between_us": task_times.get("between", 0) / count,
    }


def wait_quietly(fleet: Any, ids: list[str], timeout: float) -> dict[str, Any]:
    """``fleet.wait`` with few polls (each is Redis commands the count would include)."""
    deadline = time.monotonic() + timeout
    while True:
        found = fleet.results(ids[-1:])  # the last enqueued is (about) the last sent
        if all(r["final"] for r in found.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return dict(fleet.wait(ids, timeout=max(1.0, deadline - time.monotonic()), poll=0.5))


def scenario(name: str, port: int, redis_url: str, count: int, workers: list[int]) -> list[Any]:
    rows: list[Any] = []
    bulk = time_bulk(port, count)
    rows.append((name, "bulk", count, bulk, 1.0, None))
    pool = time_bulk_async(port, count)
    rows.append((name, "bulk-async4", count, pool, pool / bulk, None))
    for processes in workers:
        got = time_celery(redis_url, port, count, processes)
        rows.append((name, f"celery-{processes}", count, got["rate"], got["rate"] / bulk, got))
    return rows


def print_rows(rows: list[Any]) -> None:
    print(
        f"\n{'scenario':<10} {'contender':<12} {'msgs':>6} {'msg/s':>9} {'x bulk':>7}"
        f"  {'enqueue/s':>9}  {'redis cmds/msg':>14}  {'round trips/msg':>15}"
        f"  {'task cpu us/msg':>15}  {'between tasks us/msg':>20}"
    )
    for name, contender, count, rate, ratio, got in rows:
        extra = ""
        if got:
            extra = f"  {got['enqueue']:9.0f}  {got['commands']:14.2f}  {got['round_trips']:15.3f}"
            extra += f"  {got['task_cpu_us']:15.0f}  {got['between_us']:20.0f}"
        print(f"{name:<10} {contender:<12} {count:>6} {rate:>9.1f} {ratio:>7.2f}{extra}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="pool sizes, e.g. 1,2,4")
    parser.add_argument("--count", type=int, default=2000, help="messages (loopback)")
    parser.add_argument("--latency-count", type=int, default=400, help="messages (latency)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="0 skips the scenario")
    parser.add_argument("--runs", type=int, default=1, help="runs; the median is reported")
    parser.add_argument("--quick", action="store_true", help="small counts, < 1 minute")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.latency_count = 300, 100
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    sys.path.insert(0, str(HERE))
    import bench

    sink = bench.postfix_tool("smtp-sink")
    if sink is None:
        raise SystemExit("smtp-sink is missing: apt-get install -y postfix")
    print(f"machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    all_rows: list[Any] = []
    with redis_server() as redis_url, bench.smtp_sink(sink) as port:
        plans = [("loopback", port, args.count)]
        latency = bench.delay_proxy(port, args.latency_ms, 3600) if args.latency_ms else None
        with latency if latency is not None else contextlib.nullcontext() as proxy_port:
            if proxy_port is not None:
                plans.append((f"rtt{args.latency_ms:g}ms", proxy_port, args.latency_count))
            for name, target, count in plans:
                runs = [
                    scenario(name, target, redis_url, count, workers) for _ in range(args.runs)
                ]
                rows = [
                    (*row[:3], statistics.median(r[i][3] for r in runs), *row[4:])
                    for i, row in enumerate(runs[0])
                ]
                bulk_rate = rows[0][3]
                rows = [(*row[:4], row[3] / bulk_rate, row[5]) for row in rows]
                print_rows(rows)
                all_rows += rows
    if args.json:
        args.json.write_text(json.dumps(all_rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
