"""Measurements behind two hardening rules (docs/security.md), not part of the test suite.

``html2text``: the automatic text part of HTML with N links in one paragraph, for
several N; linear time shows as a constant time per link.

``ratelimit``: BulkSender with ``max_per_second=R`` against a fast local sink (a few
lines of sockets in a thread, here): the achieved rate (messages per second over the
whole run, from the times the final dots arrived at the server) and the most messages
that arrived in any 1-second window, which must never exceed R.

    python benchmarks/hardening_bench.py html2text
    python benchmarks/hardening_bench.py ratelimit --rates 10,100,300,1000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def bench_html2text(counts: list[int], runs: int) -> None:
    from fluxmail.message._html2text import html_to_text

    print(f"| links in one paragraph | HTML size | seconds (best of {runs}) | us per link |")
    print("|---:|---:|---:|---:|")
    for count in counts:
        links = (f'see <a href="https://example.com/item/{i}">item {i}</a>' for i in range(count))
        html = "<p>" + " ".join(links) + "</p>"
        best = min(_timed(lambda html=html: html_to_text(html)) for _ in range(runs))
        print(f"| {count:,} | {len(html) / 1e6:.2f} MB | {best:.2f} | {best / count * 1e6:.0f} |")


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


# --- the rate limiter ------------------------------------------------------------------------


class _Sink:
    """A minimal, fast SMTP sink (PIPELINING) that records when each final dot arrives.
    Enough to measure a client's rate; not a test server. It runs in a child process, so
    that the client and the server do not share a GIL (and the server's clock readings
    are not delayed by the client's work)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_sink_main, args=(child,), daemon=True)
        self._process.start()
        self.port: int = self._pipe.recv()

    def arrivals(self) -> list[float]:
        """Stop the sink; the monotonic times at which the final dots arrived."""
        self._pipe.send("report")
        times: list[float] = self._pipe.recv()
        self._process.join(5)
        return times


def _sink_main(pipe: Any) -> None:
    arrivals: list[float] = []
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    pipe.send(sock.getsockname()[1])

    def accept() -> None:
        while True:
            conn, _ = sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve, args=(conn, arrivals), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    pipe.recv()
    pipe.send(sorted(arrivals))


def _serve(conn: socket.socket, arrivals: list[float]) -> None:
    conn.sendall(b"220 sink\r\n")
    buf = b""
    data = False
    with conn:
        while chunk := conn.recv(65536):
            buf += chunk
            out = []
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                if data:
                    if line == b".":
                        data = False
                        arrivals.append(time.monotonic())
                        out.append(b"250 ok\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    out.append(b"250-sink\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    data = True
                    out.append(b"354 go\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"".join(out) + b"221 bye\r\n")
                    return
                else:
                    out.append(b"250 ok\r\n")
            if out:
                conn.sendall(b"".join(out))


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """The most arrivals in any window [t, t + width) (closed at the start)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def bench_ratelimit(rates: list[float], seconds: float, mode: str) -> None:
    from fluxmail import BulkSender, FluxMail

    print("| mode | asked (msg/s) | messages | achieved (msg/s) | % of asked | max in any 1 s |")
    print("|---|---:|---:|---:|---:|---:|")
    for rate in rates:
        sink = _Sink()
        count = max(2, int((rate or 2000) * seconds))  # 0: no limit, how fast it can go
        mailer = FluxMail(host="127.0.0.1", port=sink.port, sender="me@example.com")
        messages = [
            {"subject": f"m{i}", "recipients": ["to@example.com"], "body": "hello"}
            for i in range(count)
        ]
        sender = BulkSender(mailer)
        if mode == "sync":
            result = sender.send_batch(messages, max_per_second=rate, progress=False)
        else:
            result = asyncio.run(
                sender.send_batch_async(messages, max_per_second=rate, progress=False)
            )
        assert result["sent"] == count, result
        times = sink.arrivals()
        span = times[-1] - times[0]
        achieved = (len(times) - 1) / span if span > 0 else float("inf")
        peak = max_in_window(times)
        share = f"{achieved / rate * 100:.1f} %" if rate else "(no limit)"
        over = " (over!)" if rate and peak > rate else ""
        print(f"| {mode} | {rate:g} | {count:,} | {achieved:.1f} | {share} | {peak}{over} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    html = sub.add_parser("html2text")
    html.add_argument("--counts", default="8000,16000,40000")
    html.add_argument("--runs", type=int, default=3)
    rate = sub.add_parser("ratelimit")
    rate.add_argument("--rates", default="0,10,100,300,1000")
    rate.add_argument("--seconds", type=float, default=5.0)
    rate.add_argument("--modes", default="sync,async")
    args = parser.parse_args(argv)
    if args.what == "html2text":
        bench_html2text([int(c) for c in args.counts.split(",")], args.runs)
    else:
        for mode in args.modes.split(","):
            bench_ratelimit([float(r) for r in args.rates.split(",")], args.seconds, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
