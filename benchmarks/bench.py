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

Set-up (Debian/Ubuntu; ``--install-postfix`` runs the first line for you)::

    apt-get install -y postfix        # smtp-sink and smtp-source, in /usr/sbin
    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install -e . -r benchmarks/requirements.txt
    /work/benchvenv/bin/python benchmarks/bench.py            # full run, ~10 minutes
    /work/benchvenv/bin/python benchmarks/bench.py --quick    # < 1 minute

Every contender runs in a fresh interpreter: it is warmed up, then timed end to end
(connect, build every message with its own API, send, quit) ``--runs`` times over one
connection where its API allows it; the median is reported. Every loop is bounded in count
and time; smtp-sink and smtp-source output goes to /dev/null.
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
LOOPBACK = PEER_NAMES + FLUX_NAMES
POOL = ["aiosmtplib-16", "fluxmail-async-16"]
LATENCY = ["smtplib", "aiosmtplib", "fluxmail-bulk", "fluxmail-with", "fluxmail-async"]
MEMORY = ["fluxmail-bulk", "smtplib"]
SCENARIOS = ["small", "rich", "pool", "latency", "memory"]
POOL_SIZE = 16

# smtp-source -l: payload bytes, after its own ~150 bytes of headers, so that its messages
# are as large as the contenders' (the sizes column shows what each contender really sent).
SOURCE_PAYLOAD = {"small": 1250, "rich": 73000}


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
        return cls(small=400, rich=100, pool=3000, latency=20, memory=2000, runs=3, timeout=120.0)

    def warmup(self, count: int) -> int:
        return max(5, int(count * self.warmup_fraction))


@dataclass
class Row:
    name: str
    count: int = 0
    times: list[float] = field(default_factory=list)
    connections: int = 1
    reuse: str = ""
    size: int | None = None
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.count / statistics.median(self.times) if self.times else 0.0

    @property
    def spread(self) -> str:
        if len(self.times) < 2:
            return ""
        rates = sorted(self.count / t for t in self.times)
        return f"{rates[0]:,.0f}-{rates[-1]:,.0f}"


def say(text: str = "") -> None:
    print(text, flush=True)


# --- Postfix tools -------------------------------------------------------------------------------


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
    """``smtp-sink -u nobody 127.0.0.1:PORT 1000`` on a free port, output to /dev/null."""
    port = free_port()
    cmd = [tool]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
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
        line = proc.stdout.readline().decode()  # the proxy prints this line at once
        if not line.startswith("listening on "):
            raise RuntimeError("the latency proxy did not start")
        proxy_port = int(line.split()[-1])
        wait_listening(proxy_port)
        yield proxy_port
    finally:
        _stop(proc)


def smtp_source(
    tool: str, port: int, *, sessions: int, count: int, size: int, timeout: float
) -> float:
    """Seconds for ``smtp-source -d -s SESSIONS -m COUNT -l SIZE`` (stdout to /dev/null)."""
    cmd = [tool, "-d", "-s", str(sessions), "-m", str(count), "-l", str(size)]
    cmd += ["-f", "from@example.com", "-t", "to@example.com", f"{HOST}:{port}"]
    started = time.perf_counter()
    subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=timeout
    )
    return time.perf_counter() - started


def source_row(
    tool: str, port: int, *, sessions: int, count: int, kind: str, runs: int, plan: Plan
) -> Row:
    name = "smtp-source" if sessions == 1 else f"smtp-source-{sessions}"
    row = Row(name, count, connections=sessions, reuse="C, -d: one session per -s, no pipelining")
    size = SOURCE_PAYLOAD[kind]

    def once(n: int) -> float:
        return smtp_source(tool, port, sessions=sessions, count=n, size=size, timeout=plan.timeout)

    try:
        once(plan.warmup(count))
        row.times = [once(count) for _ in range(runs)]
    except (subprocess.SubprocessError, OSError) as exc:
        row.error = f"{type(exc).__name__}: {exc}"
    return row


# --- the contenders (each in its own interpreter) -------------------------------------------


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
) -> dict[str, Any]:
    """Run ``_peers.py MODE NAME`` in a fresh interpreter; return its JSON answer."""
    cmd = [sys.executable, str(PEERS), mode, name, "--port", str(port), "--kind", kind]
    cmd += ["--count", str(count), "--runs", str(runs), "--warmup", str(warmup)]
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


def contender_row(
    name: str, port: int, *, kind: str, count: int, runs: int, plan: Plan, reuse: dict[str, str]
) -> Row:
    warmup = plan.warmup(count)
    out = worker(
        "run",
        name,
        port=port,
        kind=kind,
        count=count,
        runs=runs,
        warmup=warmup,
        timeout=plan.timeout,
    )
    row = Row(name, count, reuse=reuse.get(name, ""), error=out.get("error"))
    row.connections = POOL_SIZE if name.endswith(f"-{POOL_SIZE}") else 1
    row.times = list(out.get("times", []))
    return row


def measure_sizes(bench: Bench, names: list[str], kind: str) -> dict[str, Any]:
    """Send one message per contender to a sink that dumps what it receives: checks that each
    contender works and tells how many bytes of DATA it sent (CRLF line ends counted)."""
    sizes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fluxmail-bench-") as tmp:
        os.chmod(tmp, 0o777)  # smtp-sink writes as nobody
        with smtp_sink(bench.sink_tool, Path(tmp)) as port:
            before = set(os.listdir(tmp))
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                size = SOURCE_PAYLOAD[kind]
                smtp_source(bench.source_tool, port, sessions=1, count=1, size=size, timeout=60)
            new = sorted(set(os.listdir(tmp)) - before)
            sizes["smtp-source"] = _dump_size(Path(tmp, new[-1])) if new else None
            for name in names:
                before = set(os.listdir(tmp))
                out = worker("run", name, port=port, kind=kind, timeout=bench.plan.timeout)
                if "error" in out:
                    sizes[name] = out["error"]
                    continue
                new = sorted(set(os.listdir(tmp)) - before)
                sizes[name] = _dump_size(Path(tmp, new[-1])) if new else None
    return sizes


def _dump_size(path: Path) -> int:
    """Bytes of the message inside one smtp-sink dump file (after its 3-line Received:)."""
    time.sleep(0.05)  # the sink writes the file as the transaction ends
    lines = path.read_bytes().split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Received: ")) + 3
    body = lines[start:]
    while body and body[-1] == b"":
        body.pop()
    return sum(len(line.rstrip(b"\r")) + 2 for line in body)


# --- output -------------------------------------------------------------------------------------


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def print_table(title: str, rows: list[Row], ref: float, extra: tuple[str, float] | None) -> None:
    say(f"\n### {title}\n")
    head = "| contender | conns | bytes/msg | msgs/s (median) | range | x smtp-source-1 |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if extra:
        head += f" x {extra[0]} |"
        sep += "---:|"
    say(head)
    say(sep)
    for row in rows:
        if row.error:
            cells = [row.name, str(row.connections), "-", "error", "-", "-"]
            if extra:
                cells.append("-")
            cells[3] = f"error: {row.error}"
            say("| " + " | ".join(cells) + " |")
            continue
        size = f"{row.size:,}" if isinstance(row.size, int) else "-"
        cells = [row.name, str(row.connections), size, f"{row.rate:,.1f}", row.spread or "-"]
        cells.append(fmt_ratio(row.rate / ref if ref else None))
        if extra:
            cells.append(fmt_ratio(row.rate / extra[1] if extra[1] else None))
        say("| " + " | ".join(cells) + " |")


def check(label: str, value: float | None, target: float, unit: str = "x") -> dict[str, Any]:
    met = value is not None and value >= target
    shown = "n/a" if value is None else f"{value:.2f}{unit}"
    verdict = "MET" if met else "MISSED"
    if value is not None and not met:
        verdict += f" (by {target - value:.2f}{unit}, {value / target:.0%} of target)"
    say(f"- target {label}: >= {target}{unit}; measured {shown}: {verdict}")
    return {"target": label, "goal": target, "value": value, "met": met}


def rate_of(rows: list[Row], name: str) -> float | None:
    for row in rows:
        if row.name == name and not row.error and row.times:
            return row.rate
    return None


# --- scenarios ----------------------------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    only: list[str] | None
    sink_tool: str
    source_tool: str
    reuse: dict[str, str]
    results: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def wanted(self, names: list[str]) -> list[str]:
        if not self.only:
            return names
        return [n for n in names if any(n == o or n.startswith(o) for o in self.only)]

    def loopback(self, port: int, kind: str) -> None:
        count = self.plan.small if kind == "small" else self.plan.rich
        names = self.wanted(LOOPBACK)
        say(f"\n[{kind}] sizes check ...")
        sizes = measure_sizes(self, names, kind)
        rows = [self._source(port, 1, count, kind)]
        for name in names:
            say(f"[{kind}] {name}: {count} messages x {self.plan.runs} runs ...")
            rows.append(self._contender(name, port, kind, count, self.plan.runs))
        for row in rows:
            found = sizes.get(row.name)
            if isinstance(found, int):
                row.size = found
            elif isinstance(found, str) and not row.error:
                row.error = found
        ref = rows[0].rate
        title = f"{kind} messages, 1 connection, {count} messages, median of {self.plan.runs}"
        print_table(title, rows, ref, None)
        goal = 3.5 if kind == "small" else 1.5
        for name in ("fluxmail-bulk", "fluxmail-with"):
            if name in names:
                found = rate_of(rows, name)
                self.targets.append(
                    check(f"{kind}: {name} vs smtp-source-1", found and found / ref, goal)
                )
        self.results[kind] = [vars(r) | {"rate": r.rate} for r in rows]

    def pool(self, port: int) -> None:
        count = self.plan.pool
        names = self.wanted(POOL)
        ref1 = self._source(port, 1, self.plan.small, "small")
        ref16 = self._source(port, POOL_SIZE, count, "small")
        rows = [ref1, ref16]
        for name in names:
            say(f"[pool] {name}: {count} messages x {self.plan.runs} runs ...")
            rows.append(self._contender(name, port, "small", count, self.plan.runs))
        title = f"small messages, {POOL_SIZE} connections, {count} messages"
        print_table(title, rows, ref1.rate, (f"smtp-source-{POOL_SIZE}", ref16.rate))
        if "fluxmail-async-16" in names:
            found = rate_of(rows, "fluxmail-async-16")
            value = found / ref16.rate if found and ref16.rate else None
            self.targets.append(check("pool: fluxmail-async-16 vs smtp-source-16", value, 0.85))
        self.results["pool"] = [vars(r) | {"rate": r.rate} for r in rows]

    def latency(self, port: int, rtt_ms: float) -> None:
        count = self.plan.latency
        names = self.wanted(LATENCY)
        if "aiosmtplib" not in names:
            names.insert(0, "aiosmtplib")  # the yardstick of the target
        runs = self.plan.latency_runs
        with delay_proxy(port, rtt_ms, self.plan.timeout * 4) as proxy_port:
            rows = [self._source(proxy_port, 1, count, "small", runs=runs)]
            for name in names:
                say(f"[latency {rtt_ms:g} ms] {name}: {count} messages ...")
                rows.append(self._contender(name, proxy_port, "small", count, runs))
        aio = rate_of(rows, "aiosmtplib")
        title = f"small messages, 1 connection, +{rtt_ms:g} ms RTT, {count} messages"
        print_table(title, rows, rows[0].rate, ("aiosmtplib", aio or 0.0))
        for name in ("fluxmail-bulk", "fluxmail-with", "fluxmail-async"):
            if name in names:
                found = rate_of(rows, name)
                value = found / aio if found and aio else None
                self.targets.append(
                    check(f"latency {rtt_ms:g} ms: {name} vs aiosmtplib", value, 3.5)
                )
        self.results["latency"] = {
            "rtt_ms": rtt_ms,
            "rows": [vars(r) | {"rate": r.rate} for r in rows],
        }

    def memory(self, port: int) -> None:
        count = self.plan.memory
        out = []
        say(f"\n### memory: one batch of {count:,} messages from a generator\n")
        say("| contender | kind | seconds | RSS before (MB) | peak growth (MB) | retained (MB) |")
        say("|---|---|---:|---:|---:|---:|")
        for name in self.wanted(MEMORY):
            for kind in ("small", "rich"):
                res = worker(
                    "memory",
                    name,
                    port=port,
                    kind=kind,
                    count=count,
                    warmup=200,
                    timeout=self.plan.timeout,
                )
                res["kind"] = kind
                out.append(res)
                if "error" in res:
                    say(f"| {name} | {kind} | error: {res['error']} | | | |")
                    continue
                say(
                    f"| {name} | {kind} | {res['seconds']:.1f} | {res['rss_before_mb']:.1f} "
                    f"| {res['peak_growth_mb']:.1f} | {res['retained_mb']:.1f} |"
                )
        self.results["memory"] = out
        for res in out:
            if res["name"] == "fluxmail-bulk" and "error" not in res:
                growth = res["peak_growth_mb"]
                label = (
                    f"memory: fluxmail-bulk {res['kind']} peak RSS growth (MB, lower is better)"
                )
                met = growth < 20
                say(
                    f"- target {label}: < 20 MB; measured {growth:.1f} MB: "
                    + ("MET" if met else "MISSED")
                )
                self.targets.append({"target": label, "goal": 20, "value": growth, "met": met})

    def _source(self, port: int, sessions: int, count: int, kind: str, runs: int = 0) -> Row:
        label = "smtp-source" if sessions == 1 else f"smtp-source -s {sessions}"
        runs = runs or self.plan.runs
        say(f"[{kind}] {label}: {count} messages x {runs} runs ...")
        return source_row(
            self.source_tool,
            port,
            sessions=sessions,
            count=count,
            kind=kind,
            runs=runs,
            plan=self.plan,
        )

    def _contender(self, name: str, port: int, kind: str, count: int, runs: int) -> Row:
        return contender_row(
            name, port, kind=kind, count=count, runs=runs, plan=self.plan, reuse=self.reuse
        )


# --- the machine -------------------------------------------------------------------------------


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
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": postfix,
        "versions": versions,
    }


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    return "unknown"


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Set-up: apt-get install -y postfix; pip install -e . -r "
        "benchmarks/requirements.txt (in a separate venv). See benchmarks/README.md.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, < 1 minute")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="round trip the latency scenario adds (default 20; 0 skips it)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these contenders (name or prefix, e.g. fluxmail; repeatable or "
        "comma-separated); smtp-source always runs as the reference",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--runs", type=int, help="timed runs per contender (median reported)")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="instead of benchmarking, run contender NAME under cProfile and print the top",
    )
    parser.add_argument(
        "--kind", choices=["small", "rich"], default="small", help="message kind for --profile"
    )
    parser.add_argument(
        "--install-postfix",
        action="store_true",
        help="run `apt-get install -y postfix` first if smtp-sink is missing",
    )
    parser.add_argument("--list", action="store_true", help="list the contenders and exit")
    args = parser.parse_args(argv)
    if args.only:
        args.only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.runs is not None and not 1 <= args.runs <= 20:
        parser.error("--runs must be between 1 and 20")
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
        return profile(args.profile, args.kind, sink, plan)
    bench = Bench(plan, args.only, sink, source, reuse)
    info = machine()
    say(f"# fluxmail benchmark, {info['date']}")
    say(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, Linux {info['kernel']}, "
        f"Python {info['python']}, Postfix {info['postfix']}, fluxmail at {git_commit()}"
    )
    say("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    say("command: " + " ".join(["python", "benchmarks/bench.py", *(argv or sys.argv[1:])]))
    started = time.monotonic()
    with smtp_sink(sink) as port:
        for scenario in args.scenarios:
            if scenario in ("small", "rich"):
                bench.loopback(port, scenario)
            elif scenario == "pool":
                bench.pool(port)
            elif scenario == "latency" and args.latency_ms > 0:
                bench.latency(port, args.latency_ms)
            elif scenario == "memory":
                bench.memory(port)
    say("\nconnection reuse per contender:")
    for name, how in reuse.items():
        say(f"- {name}: {how}")
    say(f"\ntotal time {time.monotonic() - started:.0f}s")
    if args.json:
        payload = {"machine": info, "plan": vars(plan), "results": bench.results}
        payload["targets"] = bench.targets
        payload["command"] = " ".join(sys.argv)
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
