"""The async pool and the cores: client CPU per message and msgs/s, 1 core vs 2.

    python benchmarks/pool_cores.py [--count 10000] [--rounds 3]

Starts ``smtp-sink`` pinned to CPU 0, then, in rounds, ``smtp-source -s 16`` and
``BulkSender.send_batch_async(connections=16)`` with ``compose_processes`` 0, 1 and 2,
each in a fresh interpreter pinned with ``taskset`` to CPU 1 (one core, beside the sink)
or to CPUs 0-1 (two cores, shared with the sink). Each fluxmail run reports the CPU
time of the event loop's process (``time.process_time()``) and of its compose workers
(from ``/proc``, sampled while they run), per message: unlike msgs/s, that stays
meaningful on a machine others share. Linux only (``taskset``, ``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import smtp_sink

SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
CASES = [("1", 0), ("1", 1), ("0,1", 0), ("0,1", 1), ("0,1", 2)]


def _tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of every descendant process of ``root``."""
    children: dict[int, list[tuple[int, float]]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        children.setdefault(int(fields[1]), []).append((int(entry), cpu))
    found: dict[int, float] = {}
    todo = [root]
    while todo:
        for pid, cpu in children.get(todo.pop(), []):
            found[pid] = cpu
            todo.append(pid)
    return found


def client(port: int, count: int, processes: int) -> dict[str, float]:
    """One timed batch in this process (after a warm-up): CPU per message and msgs/s."""
    from _peers import _mailer, fluxmail_spec, pdf_path

    from fluxmail import BulkSender

    async def batch(n: int) -> None:
        messages = [fluxmail_spec(i, "small", pdf_path()) for i in range(n)]
        sender = BulkSender(_mailer(port), compose_processes=processes)
        result = await sender.send_batch_async(messages, progress=False, connections=16)
        assert result["sent"] == n, result["errors"][:3]

    asyncio.run(batch(200))
    before = _tree_cpu(os.getpid())
    seen: dict[int, float] = {}
    done = threading.Event()

    own = [0.0]  # the sampler's own CPU, not the client's

    def sample() -> None:  # workers leave before the batch returns: sample while they run
        while not done.wait(0.1):
            for pid, cpu in _tree_cpu(os.getpid()).items():
                seen[pid] = max(seen.get(pid, 0.0), cpu)
        own[0] = time.thread_time()

    sampler = threading.Thread(target=sample, daemon=True)
    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    sampler.start()
    asyncio.run(batch(count))
    wall, thread = time.perf_counter() - wall0, time.thread_time() - thread0
    done.set()
    sampler.join()
    workers = sum(cpu - before.get(pid, 0.0) for pid, cpu in seen.items())
    return {
        "rate": count / wall,
        "loop_thread_us": 1e6 * thread / count,  # the event loop's thread alone
        "process_us": 1e6 * (time.process_time() - cpu0 - own[0]) / count,
        "workers_us": 1e6 * workers / count,
    }


def run_source(port: int, count: int, cpus: str) -> float:
    cmd = ["taskset", "-c", cpus, SOURCE, "-d", "-s", "16", "-m", str(count), "-l", "1250"]
    cmd += ["-f", "a@example.com", "-t", "b@example.com", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=300)
    return count / (time.perf_counter() - started)


def run_client(port: int, count: int, cpus: str, processes: int) -> dict[str, float]:
    cmd = ["taskset", "-c", cpus, sys.executable, __file__, "--client", str(port)]
    cmd += ["--count", str(count), "--processes", str(processes)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client(args.client, args.count, args.processes)))
        return 0
    with smtp_sink(shutil.which("smtp-sink") or "/usr/sbin/smtp-sink") as port:
        for pid in subprocess.run(
            ["pgrep", "-f", f"smtp-sink.*:{port}"], capture_output=True, text=True
        ).stdout.split():
            subprocess.run(
                ["taskset", "-p", "-c", "0", pid], check=True, stdout=subprocess.DEVNULL
            )
        sources: dict[str, list[float]] = {"1": [], "0,1": []}
        rows: dict[tuple[str, int], list[dict[str, float]]] = {case: [] for case in CASES}
        for _ in range(args.rounds):
            for cpus in sources:
                sources[cpus].append(run_source(port, args.count, cpus))
            for cpus, processes in CASES:
                rows[cpus, processes].append(run_client(port, args.count, cpus, processes))
    print(f"small messages, 16 connections, {args.count:,} per run, median of {args.rounds}")
    print(
        "\n| client on | compose_processes | msgs/s | x smtp-source -s 16 (same CPUs) |"
        " event loop thread µs/msg | process µs/msg | workers µs/msg |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for cpus, rates in sources.items():
        print(
            f"| CPU {cpus} | smtp-source -s 16 | {statistics.median(rates):,.0f} | 1.00x | | | |"
        )
    for (cpus, processes), runs in rows.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        ratio = med["rate"] / statistics.median(sources[cpus])
        print(
            f"| CPU {cpus} | {processes} | {med['rate']:,.0f} | {ratio:.2f}x |"
            f" {med['loop_thread_us']:.0f} | {med['process_us']:.0f} | {med['workers_us']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
