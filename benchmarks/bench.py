"""fluxmail benchmark: fluxmail and other Python mail libraries against Postfix's smtp-sink.

In one run on loopback (127.0.0.1 only) it sends the same small (~1.4 KB text) and rich
(~73 KB: HTML + text + 50 KB PDF) messages with fluxmail and with smtplib + EmailMessage,
aiosmtplib, Django's SMTP backend, yagmail, Red Mail and python-emails to ``smtp-sink``, and
times Postfix's C ``smtp-source`` as the reference. It prints messages/s and the ratio of each
contender to ``smtp-source`` with one connection.

Scenarios (``--scenarios``, all by default):

    small    1 connection, small messages
    rich     1 connection, rich messages
    pool     16 connections (fluxmail's async pool, 16 aiosmtplib clients, smtp-source -s 16)
    latency  1 connection through a local proxy adding --latency-ms of round trip
    memory   RSS growth of a 10,000-message generator through BulkSender.send_batch
    wakeup   (only when named) the machine: a raw-socket client spending 0-100 µs of CPU
             per message, with 2 and with 1 round trip per message

Set-up (Debian/Ubuntu; ``--install-postfix`` runs the first line for you)::

    apt-get install -y postfix        # smtp-sink and smtp-source, in /usr/sbin
    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install -e . -r benchmarks/requirements.txt
    /work/benchvenv/bin/python benchmarks/bench.py            # full run, ~10 minutes
    /work/benchvenv/bin/python benchmarks/bench.py --quick    # < 1 minute

A scenario runs in ``--runs`` rounds; each round times smtp-source and every contender once,
in an order that rotates from round to round, and the median over the rounds is reported
(with the range), so a drift of this noisy machine weighs on all alike. A contender runs in
a fresh interpreter each round, warms up, then is timed end to end (connect, build every
message with its own API, send, QUIT) over one connection where its API allows it. In the
first round it also sends one probe message to a second sink that records it: the bytes/msg
column, and a check that it works. Every loop is bounded in count and time; smtp-sink and
smtp-source output goes to /dev/null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE / "_peers.py"
PROXY = HERE / "_proxy.py"
HOST = "127.0.0.1"
POSTFIX_DIRS = ("/usr/sbin", "/usr/lib/postfix", "/usr/libexec/postfix")

PEER_NAMES = ["smtplib", "aiosmtplib", "django", "yagmail", "redmail", "python-emails"]
FLUX_NAMES = ["fluxmail-bulk", "fluxmail-with", "fluxmail-async"]
# a same-run reference: our own lean pipelining client (_lean.py), not a library
LEAN = "lean-pipelining"
LOOPBACK = PEER_NAMES + FLUX_NAMES + [LEAN]
POOL = ["aiosmtplib-16", "fluxmail-async-16", "fluxmail-async-16p"]
LATENCY = ["smtplib", "aiosmtplib", "fluxmail-bulk", "fluxmail-with", "fluxmail-async"]
MEMORY = [("fluxmail-bulk", "small"), ("fluxmail-bulk", "rich"), ("smtplib", "small")]
# one more: a few messages, each with a BIG_MB attachment; the peak must stay below 2x it
BIG_MB, BIG_COUNT, TARGET_BIG_RATIO = 50, 3, 2.0
SCENARIOS = ["small", "rich", "pool", "latency", "memory"]
EXTRA_SCENARIOS = ["wakeup"]  # run only when named in --scenarios
POOL_SIZE = 16
QUIET_LIMIT = 0.10  # other processes' CPU share above which a scenario is flagged as noisy

# smtp-source -l: payload bytes, after its own ~130 bytes of headers, so that its messages
# are as large as the contenders' (the bytes/msg column shows what each one really sent).
SOURCE_PAYLOAD = {"small": 1250, "rich": 73000}

# The targets for fluxmail.
TARGET_SMALL, TARGET_RICH, TARGET_POOL, TARGET_LATENCY, TARGET_MEMORY_MB = 3.0, 1.5, 0.5, 3.5, 20


@dataclass
class Plan:
    """How many messages each scenario sends (``--quick`` shrinks everything)."""

    small: int = 3000
    rich: int = 1000
    pool: int = 20000
    latency: int = 200
    memory: int = 10000
    runs: int = 3
    latency_runs: int = 1
    warmup_fraction: float = 0.1
    timeout: float = 900.0

    @classmethod
    def quick(cls) -> Plan:
        return cls(small=250, rich=50, pool=2500, latency=15, memory=1000, timeout=120.0)

    def warmup(self, count: int) -> int:
        return max(5, int(count * self.warmup_fraction))


@dataclass
class Row:
    name: str
    count: int = 0
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # client CPU seconds of each run
    connections: int = 1
    source: bool = False  # smtp-source (a C program) rather than a Python contender
    retried: int = 0  # measurements taken again because other processes loaded the CPU
    noisy: int = 0  # measurements kept although the machine was still busy
    size: int | None = None
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.count / statistics.median(self.times) if self.times else 0.0

    @property
    def cpu_us(self) -> float | None:
        """Client CPU (user + system, ``time.process_time``) per message, median."""
        return statistics.median(self.cpu) / self.count * 1e6 if self.cpu else None

    @property
    def spread(self) -> str:
        if len(self.times) < 2:
            return ""
        rates = sorted(self.count / t for t in self.times)
        return f"{rates[0]:,.0f}-{rates[-1]:,.0f}"

    def as_dict(self) -> dict[str, Any]:
        return vars(self) | {"rate": self.rate}


def say(text: str = "") -> None:
    print(text, flush=True)


# --- Postfix tools, the sinks, the proxy -------------------------------------------------


def postfix_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in POSTFIX_DIRS:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def install_postfix() -> None:
    """``apt-get install -y postfix`` without the interactive mailer-type question."""
    if os.geteuid() != 0:
        raise SystemExit("--install-postfix needs root: run `sudo apt-get install -y postfix`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    selection = "postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=selection.encode(), check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "postfix"], check=True, env=env, timeout=900)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {seconds:.0f}s")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def smtp_sink(tool: str, dump_dir: Path | None = None) -> Iterator[int]:
    """``smtp-sink -u nobody 127.0.0.1:PORT 1000`` on a free port, output to /dev/null.

    With ``dump_dir`` every transaction is also written to a file there (``-d``)."""
    port = free_port()
    cmd = [tool]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # required when smtp-sink starts as root
    if dump_dir is not None:
        cmd += ["-d", f"{dump_dir}/%H%M%S."]
    cmd += [f"{HOST}:{port}", "1000"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port)
        yield port
    finally:
        _stop(proc)


class Recorder:
    """A second smtp-sink that keeps each message in a file: one probe message per contender
    tells how many bytes it really sends, and that it works at all."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port

    def files(self) -> set[str]:
        return set(os.listdir(self.folder))

    def size_since(self, before: set[str]) -> int | None:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # the sink closes the file as the dot is answered
            new = sorted(self.files() - before)
            if new:
                time.sleep(0.02)
                return _dump_size(self.folder / new[-1])
            time.sleep(0.02)
        return None


def _dump_size(path: Path) -> int | None:
    """Bytes on the wire of the message in one dump file (after smtp-sink's 3-line Received:
    header; line ends counted as CRLF; the terminating dot not counted)."""
    lines = path.read_bytes().split(b"\n")
    marks = [i for i, line in enumerate(lines) if line.startswith(b"Received: ")]
    if not marks:
        return None
    body = lines[marks[0] + 3 :]
    while body and body[-1] == b"":
        body.pop()
    return sum(len(line.rstrip(b"\r")) + 2 for line in body)


@contextlib.contextmanager
def recorder(tool: str) -> Iterator[Recorder]:
    with tempfile.TemporaryDirectory(prefix="fluxmail-bench-") as tmp:
        os.chmod(tmp, 0o777)  # smtp-sink writes as nobody
        with smtp_sink(tool, Path(tmp)) as port:
            yield Recorder(Path(tmp), port)


@contextlib.contextmanager
def delay_proxy(port: int, rtt_ms: float, max_seconds: float) -> Iterator[int]:
    """The latency proxy of ``_proxy.py``, in its own process, in front of ``port``."""
    cmd = [sys.executable, str(PROXY), "--target", f"{HOST}:{port}", "--rtt-ms", str(rtt_ms)]
    cmd += ["--max-seconds", str(max_seconds)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # printed at once, or EOF if it died
        if not line.startswith("listening on "):
            raise RuntimeError("the latency proxy did not start")
        proxy_port = int(line.split()[-1])
        wait_listening(proxy_port)
        yield proxy_port
    finally:
        _stop(proc)


def cpu_busy(interval: float = 1.0) -> float | None:
    """Share of the machine's CPU time that was not idle over ``interval`` (from /proc/stat):
    run between scenarios, when the benchmark itself is idle, it measures everything else."""

    def snap() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = snap()
        time.sleep(interval)
        idle1, total1 = snap()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(limit: float, max_wait: float, interval: float = 1.0) -> float | None:
    """Wait (at most ``max_wait`` seconds) until other processes use < ``limit`` of the CPU."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy(interval)
    while busy is not None and busy >= limit and time.monotonic() < deadline:
        busy = cpu_busy(1.0)
    return busy


def smtp_source(
    tool: str, port: int, *, sessions: int, count: int, size: int, timeout: float
) -> float:
    """Seconds for ``smtp-source -d -s SESSIONS -m COUNT -l SIZE`` (output to /dev/null)."""
    cmd = [tool, "-d", "-s", str(sessions), "-m", str(count), "-l", str(size)]
    cmd += ["-f", "from@example.com", "-t", "to@example.com", f"{HOST}:{port}"]
    started = time.perf_counter()
    subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=timeout
    )
    return time.perf_counter() - started


# --- the contenders, each in its own interpreter -----------------------------------------


def worker(
    mode: str,
    name: str,
    *,
    timeout: float,
    port: int = 0,
    kind: str = "small",
    count: int = 1,
    runs: int = 1,
    warmup: int = 0,
    probe_port: int = 0,
) -> dict[str, Any]:
    """Run ``_peers.py MODE NAME`` in a fresh interpreter; return its JSON answer."""
    cmd = [sys.executable, str(PEERS), mode, name, "--port", str(port), "--kind", kind]
    cmd += ["--count", str(count), "--runs", str(runs), "--warmup", str(warmup)]
    cmd += ["--probe-port", str(probe_port)]
    try:
        done = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {timeout:.0f}s"}
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {"name": name, "error": f"exit {done.returncode}: {tail[0][:200]}"}
    return dict(json.loads(lines[-1]))


# --- output ------------------------------------------------------------------------------


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def print_table(title: str, rows: list[Row], ref: float, extra: tuple[str, float] | None) -> None:
    say(f"\n### {title}\n")
    head = "| contender | conns | bytes/msg | msgs/s (median) | range | CPU µs/msg "
    head += "| x smtp-source-1 |"
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if extra:
        head += f" x {extra[0]} |"
        sep += "---:|"
    say(head)
    say(sep)
    for row in rows:
        size = f"{row.size:,}" if isinstance(row.size, int) else "-"
        if row.error:
            cells = [row.name, str(row.connections), size, f"error: {row.error}", "-", "-", "-"]
            cells += ["-"] if extra else []
        else:
            cells = [row.name, str(row.connections), size, f"{row.rate:,.1f}", row.spread or "-"]
            cpu = row.cpu_us
            cells.append(f"{cpu:,.0f}" if cpu is not None else "-")
            cells.append(fmt_ratio(row.rate / ref if ref else None))
            if extra:
                cells.append(fmt_ratio(row.rate / extra[1] if extra[1] else None))
        say("| " + " | ".join(cells) + " |")
    retried = sum(row.retried for row in rows)
    noisy = sum(row.noisy for row in rows)
    if retried or noisy:
        say(
            f"\n({retried} measurement(s) taken again because other processes loaded the CPU "
            f"right after; {noisy} kept although the machine stayed busy)"
        )


def rate_of(rows: list[Row], name: str) -> float | None:
    for row in rows:
        if row.name == name and not row.error and row.times:
            return row.rate
    return None


# --- scenarios ---------------------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    only: list[str] | None
    sink_tool: str
    source_tool: str
    reuse: dict[str, str]
    results: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    rec: Recorder | None = None
    quiet_wait: float = 0.0  # --wait-quiet: the budget of seconds to wait, for the whole run
    background: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.quiet_budget = self.quiet_wait

    def settle(self, scenario: str) -> None:
        """Note (and with --wait-quiet, wait for) the CPU other processes use right now."""
        busy = self.quiet(1.0)
        self.background[scenario] = busy
        if busy is not None:
            note = "  (noisy: expect a wide range)" if busy >= QUIET_LIMIT else ""
            say(f"\n[{scenario}] other processes use {busy:.0%} of the CPU{note}")

    def quiet(self, interval: float) -> float | None:
        """Wait for a quiet machine, spending at most what is left of the run's budget."""
        started = time.monotonic()
        busy = wait_quiet(QUIET_LIMIT, max(0.0, self.quiet_budget), interval)
        self.quiet_budget -= time.monotonic() - started - interval
        return busy

    def wanted(self, names: list[str]) -> list[str]:
        if not self.only:
            return names
        return [n for n in names if any(n == o or n.startswith(o) for o in self.only)]

    def target(
        self,
        label: str,
        value: float | None,
        goal: float,
        *,
        below: bool = False,
        unit: str | None = None,
    ) -> None:
        """Print and keep one verdict: ``value`` >= ``goal`` (or < ``goal`` with ``below``)."""
        unit = unit or (" MB" if below else "x")
        if value is None:
            met, shown = False, "n/a"
        else:
            met = value < goal if below else value >= goal
            shown = f"{value:.2f}{unit}"
        verdict = "MET" if met else "MISSED"
        if value is not None and not met and not below:
            verdict += f" (by {goal - value:.2f}x: {value / goal:.0%} of the target)"
        say(
            f"- target {label}: {'<' if below else '>='} {goal}{unit}; measured {shown}: {verdict}"
        )
        self.targets.append({"target": label, "goal": goal, "value": value, "met": met})

    def loopback(self, port: int, kind: str) -> None:
        count = self.plan.small if kind == "small" else self.plan.rich
        runs = self.plan.runs
        ref = Row("smtp-source", count, source=True)
        rows = [ref] + [Row(name, count) for name in self.wanted(LOOPBACK)]
        self.measure(rows, port, kind, runs)
        title = f"{kind} messages, 1 connection, {count:,} messages, median of {runs} rounds"
        print_table(title, rows, ref.rate, None)
        goal = TARGET_SMALL if kind == "small" else TARGET_RICH
        for name in ("fluxmail-bulk", "fluxmail-with"):
            if any(r.name == name for r in rows):
                found = rate_of(rows, name)
                value = found / ref.rate if found and ref.rate else None
                self.target(f"{kind}, sync, 1 connection: {name} / smtp-source-1", value, goal)
        lean, bulk = rate_of(rows, LEAN), rate_of(rows, "fluxmail-bulk")
        if lean and ref.rate:
            share = f"; fluxmail-bulk: {bulk / lean:.2f}x of it" if bulk else ""
            ratio = lean / ref.rate
            say(f"- reference ({LEAN}, no rules, no overlap): {ratio:.2f}x smtp-source-1{share}")
        self.results[kind] = [r.as_dict() for r in rows]

    def pool(self, port: int) -> None:
        count, runs = self.plan.pool, self.plan.runs
        ref1 = Row("smtp-source", self.plan.small, source=True)
        ref16 = Row(f"smtp-source-{POOL_SIZE}", count, connections=POOL_SIZE, source=True)
        rows = [ref1, ref16]
        for name in self.wanted(POOL):
            # aiosmtplib-16 runs ~20x slower: the small-scenario count is plenty for it.
            n = count if name.startswith("fluxmail") else self.plan.small
            rows.append(Row(name, n, connections=POOL_SIZE))
        self.measure(rows, port, "pool", runs)
        title = (
            f"small messages, {POOL_SIZE} connections, up to {count:,} messages, "
            f"median of {runs} rounds"
        )
        print_table(title, rows, ref1.rate, (f"smtp-source-{POOL_SIZE}", ref16.rate))
        if any(r.name == "fluxmail-async-16" for r in rows):
            found = rate_of(rows, "fluxmail-async-16")
            value = found / ref16.rate if found and ref16.rate else None
            label = f"async pool of {POOL_SIZE}: fluxmail-async-16 / smtp-source-{POOL_SIZE}"
            self.target(label, value, TARGET_POOL)
        self.results["pool"] = [r.as_dict() for r in rows]

    def latency(self, port: int, rtt_ms: float) -> None:
        count, runs = self.plan.latency, self.plan.latency_runs
        names = self.wanted(LATENCY)
        if "aiosmtplib" not in names:
            names.insert(0, "aiosmtplib")  # the yardstick of the target
        ref = Row("smtp-source", count, source=True)
        rows = [ref] + [Row(name, count) for name in names]
        with delay_proxy(port, rtt_ms, self.plan.timeout * 4) as proxy:
            self.measure(rows, proxy, "small", runs, probe=False, label=f"+{rtt_ms:g} ms")
        aio = rate_of(rows, "aiosmtplib")
        title = f"small messages, 1 connection, +{rtt_ms:g} ms RTT, {count:,} messages"
        print_table(title, rows, ref.rate, ("aiosmtplib", aio or 0.0))
        for name in ("fluxmail-bulk", "fluxmail-with", "fluxmail-async"):
            if name in names:
                found = rate_of(rows, name)
                value = found / aio if found and aio else None
                label = f"+{rtt_ms:g} ms RTT, 1 connection: {name} / aiosmtplib"
                self.target(label, value, TARGET_LATENCY)
        self.results["latency"] = {"rtt_ms": rtt_ms, "rows": [r.as_dict() for r in rows]}

    def memory(self, port: int) -> None:
        count = self.plan.memory
        out = []
        big = f"big-{BIG_MB}"
        for name, kind in [*MEMORY, ("fluxmail-bulk", big)]:
            if name not in self.wanted([name]):
                continue
            n = BIG_COUNT if kind == big else count
            say(f"[memory] {name}, {kind}: {n:,} messages from a generator ...")
            timeout = self.plan.timeout
            res = worker(
                "memory", name, port=port, kind=kind, count=n, warmup=200, timeout=timeout
            )
            out.append(res | {"kind": kind})
        say(f"\n### memory: one batch of {count:,} messages fed by a generator, 1 connection\n")
        say("| contender | kind | msgs/s | RSS before (MB) | peak growth (MB) | retained (MB) |")
        say("|---|---|---:|---:|---:|---:|")
        for res in out:
            if "error" in res:
                say(f"| {res['name']} | {res['kind']} | error: {res['error']} | | | |")
                continue
            say(
                f"| {res['name']} | {res['kind']} | {res['count'] / res['seconds']:,.0f} "
                f"| {res['rss_before_mb']:.1f} | {res['peak_growth_mb']:.1f} "
                f"| {res['retained_mb']:.1f} |"
            )
        for res in out:
            if res["name"] == "fluxmail-bulk" and res["kind"] == big:
                ratio = None if "error" in res else res["peak_growth_mb"] / BIG_MB
                label = f"{BIG_COUNT} messages with a {BIG_MB} MB attachment: peak growth / size"
                self.target(label, ratio, TARGET_BIG_RATIO, below=True, unit="x")
            elif res["name"] == "fluxmail-bulk":
                label = f"{count:,}-message batch, {res['kind']}: peak RSS growth"
                growth = None if "error" in res else res["peak_growth_mb"]
                self.target(label, growth, TARGET_MEMORY_MB, below=True)
        self.results["memory"] = out

    def wakeup(self, port: int) -> None:
        count = self.plan.small
        say(f"[wakeup] raw-socket client, {count:,} messages per cell, median of 3 ...")
        res = worker("wakeup", "wakeup", port=port, count=count, timeout=self.plan.timeout)
        if "error" in res:
            say(f"wakeup: error: {res['error']}")
            return
        say("\n### the machine: raw-socket SMTP client, CPU spent per message vs msgs/s\n")
        say("| CPU per message | 2 round trips/msg | 1 round trip/msg |")
        say("|---:|---:|---:|")
        for row in res["rows"]:
            say(f"| {row['spin_us']} µs | {row['two_rtt']:,.0f} | {row['one_rtt']:,.0f} |")
        self.results["wakeup"] = res["rows"]

    # measuring
    def measure(
        self,
        rows: list[Row],
        port: int,
        scenario: str,
        rounds: int,
        *,
        probe: bool = True,
        label: str = "",
    ) -> None:
        """Time every row once per round, rotating the order from round to round, so that a
        drift of the machine weighs on all alike. A contender starts a fresh interpreter
        and warms up every round; in the first round it also sends the probe message.

        With ``--wait-quiet``, each measurement waits for the machine to be quiet first and
        is taken again (twice at most) when other processes loaded the CPU right after it."""
        kind = "rich" if scenario == "rich" else "small"
        for index in range(rounds):
            shift = index % len(rows)
            order = rows[shift:] + rows[:shift]
            names = ", ".join(row.name for row in order if not row.error)
            say(f"[{scenario}{' ' + label if label else ''}] round {index + 1}/{rounds}: {names}")
            for row in order:
                first = probe and index == 0 and self.rec is not None
                for attempt in range(3 if self.quiet_wait else 1):
                    if self.quiet_wait:
                        self.quiet(0.3)
                    if row.error:
                        break
                    if row.source:
                        seconds = self._time_source(row, port, kind, first=first and not attempt)
                    else:
                        seconds = self._time_contender(
                            row, port, kind, first=first and not attempt
                        )
                    if seconds is None:
                        break
                    busy = cpu_busy(0.3) if self.quiet_wait else None
                    if busy is None or busy < QUIET_LIMIT or attempt == 2:
                        row.times.append(seconds)
                        row.noisy += busy is not None and busy >= QUIET_LIMIT
                        break
                    row.retried += 1

    def _time_source(self, row: Row, port: int, kind: str, *, first: bool) -> float | None:
        try:
            if first and self.rec is not None:
                before = self.rec.files()
                self._run_source(self.rec.port, 1, 1, kind)
                row.size = self.rec.size_since(before)
            if not row.times:
                self._run_source(port, row.connections, self.plan.warmup(row.count), kind)
            return self._run_source(port, row.connections, row.count, kind)
        except (subprocess.SubprocessError, OSError) as exc:
            row.error = f"{type(exc).__name__}: {exc}"
            return None

    def _run_source(self, port: int, sessions: int, count: int, kind: str) -> float:
        return smtp_source(
            self.source_tool,
            port,
            sessions=sessions,
            count=count,
            size=SOURCE_PAYLOAD[kind],
            timeout=self.plan.timeout,
        )

    def _time_contender(self, row: Row, port: int, kind: str, *, first: bool) -> float | None:
        rec = self.rec if first else None
        before = rec.files() if rec else set()
        out = worker(
            "run",
            row.name,
            port=port,
            kind=kind,
            count=row.count,
            runs=1,
            warmup=self.plan.warmup(row.count),
            probe_port=rec.port if rec else 0,
            timeout=self.plan.timeout,
        )
        if "error" in out or not out.get("times"):
            row.error = str(out.get("error", "no time reported"))
            return None
        if rec:
            row.size = rec.size_since(before)
        row.cpu += out.get("cpu", [])[:1]
        return float(out["times"][0])


# --- the machine -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from importlib import metadata

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("fluxmail", "aiosmtplib", "django", "yagmail", "redmail", "emails"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    postfix = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        query = ["dpkg-query", "-W", "-f=${Version}", "postfix"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=10, check=False)
        postfix = done.stdout.strip() or "unknown"
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as fh:
        mem = f"{int(fh.readline().split()[1]) / 2**20:.1f} GiB"
    idle = "unknown"
    with contextlib.suppress(OSError):
        idle = Path("/sys/devices/system/cpu/cpuidle/current_driver").read_text().strip()
        poll = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        if poll.exists():
            idle += f", guest_halt_poll_ns={poll.read_text().strip()}"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "cpuidle": idle,
        "python": platform.python_version(),
        "postfix": postfix,
        "versions": versions,
    }


def git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        query = ["git", "-C", str(HERE.parent), *args]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
        return done.stdout.strip()
    return ""


def fluxmail_under_test(snapshot: str | None) -> str:
    """Which fluxmail the workers import: a committed snapshot, or the working tree."""
    if snapshot:
        return f"{snapshot} (commit {git('rev-parse', '--short', snapshot) or '?'}, snapshot)"
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src")
    changed = len(dirty.splitlines()) if dirty else 0
    return f"working tree at {head}" + (
        f" + {changed} uncommitted file(s) in src/" if changed else ""
    )


@contextlib.contextmanager
def source_snapshot(rev: str | None) -> Iterator[None]:
    """With ``rev``, extract ``git archive REV src`` to a temporary folder and put it first
    on the workers' PYTHONPATH: the run measures that commit, whatever the working tree holds
    (other people may be editing it). Without ``rev``, nothing changes."""
    if not rev:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="fluxmail-src-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(HERE.parent), "archive", rev, "src"],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True, timeout=120)
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [f"{tmp}/src", old]))
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old


# --- main --------------------------------------------------------------------------------


LATENCY_HELP = "round trip the latency scenario adds (default 20; 0 skips the scenario)"
ONLY_HELP = (
    "run only these contenders (a name or a prefix such as 'fluxmail'; repeatable or "
    "comma-separated); smtp-source always runs as the reference"
)
SCENARIOS_HELP = (
    f"comma-separated subset of {','.join(SCENARIOS)} (default: all); 'wakeup' (a probe of "
    "the machine) runs only when named"
)
QUIET_HELP = (
    f"wait for other processes to leave the CPU idle (< {QUIET_LIMIT * 100:.0f}%% busy) before "
    "each measurement, and measure again (twice at most) when they loaded it right after; "
    "SECONDS is the waiting budget of the whole run"
)
SNAPSHOT_HELP = (
    "measure the fluxmail of commit REV (default HEAD, via git archive) instead of the "
    "working tree that the venv imports"
)
INSTALL_HELP = "if smtp-sink is missing, run `apt-get install -y postfix` first (root)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Set-up: apt-get install -y postfix; pip install -e . -r "
        "benchmarks/requirements.txt (in a separate venv). See benchmarks/README.md.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="small counts: the whole run in < 1 minute")
    add("--latency-ms", type=float, default=20.0, metavar="MS", help=LATENCY_HELP)
    add("--only", action="append", metavar="NAME", help=ONLY_HELP)
    add("--scenarios", default=",".join(SCENARIOS), help=SCENARIOS_HELP)
    add("--wait-quiet", type=float, default=0.0, metavar="SECONDS", help=QUIET_HELP)
    add("--runs", type=int, help="timed runs per contender, median reported (default 3)")
    add("--snapshot", nargs="?", const="HEAD", metavar="REV", help=SNAPSHOT_HELP)
    add("--json", type=Path, metavar="FILE", help="also write every number to FILE")
    add("--profile", metavar="NAME", help="instead: profile contender NAME with cProfile")
    add("--kind", choices=["small", "rich"], default="small", help="message kind for --profile")
    add("--install-postfix", action="store_true", help=INSTALL_HELP)
    add("--list", action="store_true", help="list the contenders and how they connect")
    args = parser.parse_args(argv)
    if args.only:
        args.only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS) - set(EXTRA_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.runs is not None and not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
    if not 0 <= args.wait_quiet <= 3600:
        parser.error("--wait-quiet must be between 0 and 3600 seconds")
    if not 0 <= args.latency_ms <= 1000:
        parser.error("--latency-ms must be between 0 and 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reuse = worker("list", "", timeout=60)
    if args.list:
        for name, how in reuse.items():
            say(f"{name:18} {how}")
        return 0
    sink, source = postfix_tool("smtp-sink"), postfix_tool("smtp-source")
    if (sink is None or source is None) and args.install_postfix:
        install_postfix()
        sink, source = postfix_tool("smtp-sink"), postfix_tool("smtp-source")
    if sink is None or source is None:
        say("smtp-sink / smtp-source not found. Install Postfix's test tools:")
        say("    apt-get install -y postfix      (or: bench.py --install-postfix)")
        return 2
    plan = Plan.quick() if args.quick else Plan()
    if args.runs:
        plan.runs = args.runs
    if args.profile:
        with source_snapshot(args.snapshot):
            return profile(args.profile, args.kind, sink, plan)
    info = machine() | {"fluxmail": fluxmail_under_test(args.snapshot)}
    say(f"# fluxmail benchmark, {info['date']}\n")
    say(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, Linux {info['kernel']} "
        f"(cpuidle {info['cpuidle']}), Python {info['python']}, Postfix {info['postfix']}"
    )
    say(f"fluxmail under test: {info['fluxmail']}")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    say("command: " + " ".join(["python", "benchmarks/bench.py", *(argv or sys.argv[1:])]))
    started = time.monotonic()
    bench = Bench(plan, args.only, sink, source, reuse, quiet_wait=args.wait_quiet)
    with source_snapshot(args.snapshot), smtp_sink(sink) as port, recorder(sink) as rec:
        bench.rec = rec
        for scenario in args.scenarios:
            if scenario != "latency" or args.latency_ms > 0:
                bench.settle(scenario)
            if scenario in ("small", "rich"):
                bench.loopback(port, scenario)
            elif scenario == "pool":
                bench.pool(port)
            elif scenario == "latency" and args.latency_ms > 0:
                bench.latency(port, args.latency_ms)
            elif scenario == "memory":
                bench.memory(port)
            elif scenario == "wakeup":
                bench.wakeup(port)
    say("\nHow each contender connects:")
    for name, how in reuse.items():
        say(f"- {name}: {how}")
    say(f"\ntotal time {time.monotonic() - started:.0f}s")
    if args.json:
        payload = {"machine": info, "plan": vars(plan), "results": bench.results}
        payload |= {"targets": bench.targets, "reuse": reuse, "argv": sys.argv[1:]}
        payload["background_cpu"] = bench.background
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        say(f"wrote {args.json}")
    return 0


def profile(name: str, kind: str, sink: str, plan: Plan) -> int:
    count = plan.small if kind == "small" else plan.rich
    with smtp_sink(sink) as port:
        cmd = [sys.executable, str(PEERS), "profile", name, "--port", str(port)]
        cmd += ["--kind", kind, "--count", str(count), "--warmup", str(plan.warmup(count))]
        done = subprocess.run(cmd, timeout=plan.timeout, check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
