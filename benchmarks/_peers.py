"""The contenders of ``bench.py``: one function per library, plus the shared test content.

Run as a worker process by ``bench.py`` (one fresh interpreter per contender and scenario,
so imports, garbage and settings of one library never weigh on another)::

    python benchmarks/_peers.py run NAME --port P --kind small --count N --runs 3
    python benchmarks/_peers.py memory NAME --port P --kind small --count 10000
    python benchmarks/_peers.py profile NAME --port P --kind small --count 3000
    python benchmarks/_peers.py wakeup wakeup --port P --count 3000

``run`` warms the contender up, then times ``--runs`` runs end to end (connect, build each
message with the library's own API, send it, quit) and prints one JSON line with the
seconds of each run. ``memory`` reports how much the resident set grew over one batch.

Every contender keeps ONE connection open for the whole run where its API allows it;
``REUSE`` says how, or why not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SENDER_NAME = "Bench Sender"
SENDER_ADDR = "from@example.com"
SENDER = f"{SENDER_NAME} <{SENDER_ADDR}>"
RCPT = "to@example.com"
MSGID_DOMAIN = "example.com"

# --- the test content ----------------------------------------------------------------------

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure"
)
_WORDS = _LOREM.split()


def _lines(count: int, width: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        line = ""
        while len(line) < width - 12:
            line += rng.choice(_WORDS) + " "
        out.append(line.rstrip().capitalize() + ".")
    return out


# ~1.25 KB of plain ASCII text: with the headers every library adds, ~1.4 KB on the wire.
SMALL_TEXT = "Hello,\n\n" + "\n".join(_lines(17, 72, 1)) + "\n\nRegards,\nThe bench\n"
# The rich message: ~1.1 KB text, ~2.3 KB HTML and a 50 KB PDF (base64: ~68 KB).
RICH_TEXT = "Hello,\n\n" + "\n".join(_lines(14, 72, 2)) + "\n\nRegards,\nThe bench\n"
RICH_HTML = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Monthly report</title>\n'
    "<style>body{font-family:sans-serif} td{padding:4px 8px}</style></head>\n<body>\n"
    "<h1>Monthly report</h1>\n"
    + "\n".join(f"<p>{line}</p>" for line in _lines(14, 76, 3))
    + '\n<table border="1">\n'
    + "\n".join(
        f"<tr><td>Item {n}</td><td>{n * 37 % 1000}</td><td>{n * 91 % 100}%</td></tr>"
        for n in range(1, 20)
    )
    + "\n</table>\n<p>See the attached PDF.</p>\n</body></html>\n"
)
PDF_NAME = "report.pdf"
PDF_SIZE = 50 * 1024


def make_pdf(size: int = PDF_SIZE) -> bytes:
    """A small, structurally plausible PDF of exactly ``size`` bytes (incompressible)."""
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    objs = [
        b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n",
        b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n",
        b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>\n"
        b"endobj\n",
    ]
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R /Size 5 >>\n%%EOF\n"
    fixed = len(head) + sum(map(len, objs)) + len(tail)
    stream_len = size - fixed - len(b"4 0 obj\n<< /Length 00000 >>\nstream\n")
    stream = random.Random(4).randbytes(stream_len)
    obj4 = b"4 0 obj\n<< /Length %05d >>\nstream\n" % stream_len + stream
    data = head + b"".join(objs) + obj4 + tail
    assert len(data) == size, len(data)
    return data


def pdf_path() -> Path:
    """The attachment, written once per machine to the temp dir; every contender reads it
    from disk per message through its own API (the read is part of the build cost)."""
    path = Path(tempfile.gettempdir()) / "fluxmail-bench" / PDF_NAME
    data = make_pdf()
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


BIG_NAME = "big.bin"


def big_path(megabytes: int) -> Path:
    """A file of ``megabytes`` MB of random bytes for the memory scenario (written once)."""
    size = megabytes * 2**20
    path = Path(tempfile.gettempdir()) / "fluxmail-bench" / f"{megabytes}mb-{BIG_NAME}"
    if not path.exists() or path.stat().st_size != size:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(random.Random(5).randbytes(size))
        tmp.replace(path)
    return path


def subject(i: int) -> str:
    return f"Benchmark message {i}"


# --- contenders ------------------------------------------------------------------------------
# Each takes (port, kind, count, connections) and returns how many messages the server took.

Runner = Callable[[int, str, int, int], int]
RUNNERS: dict[str, Runner] = {}
REUSE: dict[str, str] = {}


def contender(name: str, reuse: str) -> Callable[[Runner], Runner]:
    def register(func: Runner) -> Runner:
        RUNNERS[name] = func
        REUSE[name] = reuse
        return func

    return register


def _email_message(i: int, kind: str, pdf: Path) -> Any:
    """The standard library way: email.message.EmailMessage (policy=default)."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    msg = EmailMessage()
    msg["Subject"] = subject(i)
    msg["From"] = SENDER
    msg["To"] = RCPT
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=MSGID_DOMAIN)
    if kind == "small":
        msg.set_content(SMALL_TEXT)
    else:
        msg.set_content(RICH_TEXT)
        msg.add_alternative(RICH_HTML, subtype="html")
        msg.add_attachment(
            pdf.read_bytes(), maintype="application", subtype="pdf", filename=PDF_NAME
        )
    return msg


@contender("smtplib", "one smtplib.SMTP, send_message() per message")
def run_smtplib(port: int, kind: str, count: int, connections: int) -> int:
    import smtplib

    pdf = pdf_path()
    sent = 0
    with smtplib.SMTP(HOST, port) as smtp:
        for i in range(count):
            smtp.send_message(_email_message(i, kind, pdf))
            sent += 1
    return sent


@contender("aiosmtplib", "one aiosmtplib.SMTP client, send_message() per message")
def run_aiosmtplib(port: int, kind: str, count: int, connections: int) -> int:
    import aiosmtplib

    pdf = pdf_path()

    async def session(first: int, n: int) -> int:
        sent = 0
        async with aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False) as client:
            for i in range(first, first + n):
                await client.send_message(_email_message(i, kind, pdf))
                sent += 1
        return sent

    async def main() -> int:
        shares = [count // connections + (k < count % connections) for k in range(connections)]
        starts = [sum(shares[:k]) for k in range(connections)]
        done = await asyncio.gather(*(session(s, n) for s, n in zip(starts, shares, strict=True)))
        return sum(done)

    return asyncio.run(main())


REUSE["aiosmtplib-16"] = "16 aiosmtplib.SMTP clients in asyncio.gather, messages split evenly"
RUNNERS["aiosmtplib-16"] = lambda port, kind, count, _c: run_aiosmtplib(port, kind, count, 16)

_django_ready = False


def _setup_django(port: int) -> None:
    global _django_ready
    from django.conf import settings

    if not _django_ready:
        settings.configure(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=HOST,
            EMAIL_PORT=port,
            DEFAULT_FROM_EMAIL=SENDER,
        )
        _django_ready = True


@contender("django", "get_connection() + send_messages(list of all messages)")
def run_django(port: int, kind: str, count: int, connections: int) -> int:
    _setup_django(port)
    from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection

    pdf = str(pdf_path())
    messages: list[EmailMessage] = []
    for i in range(count):
        if kind == "small":
            messages.append(EmailMessage(subject(i), SMALL_TEXT, SENDER, [RCPT]))
        else:
            msg = EmailMultiAlternatives(subject(i), RICH_TEXT, SENDER, [RCPT])
            msg.attach_alternative(RICH_HTML, "text/html")
            msg.attach_file(pdf, "application/pdf")
            messages.append(msg)
    connection = get_connection(host=HOST, port=port, fail_silently=False)
    return connection.send_messages(messages)


@contender(
    "yagmail",
    "NO reuse: yagmail.SMTP.send() reconnects on every call (it calls login() each time)",
)
def run_yagmail(port: int, kind: str, count: int, connections: int) -> int:
    import yagmail

    pdf = str(pdf_path())
    yag = yagmail.SMTP(
        user=SENDER_ADDR,
        host=HOST,
        port=port,
        smtp_ssl=False,
        smtp_starttls=False,
        smtp_skip_login=True,
    )
    try:
        for i in range(count):
            if kind == "small":
                result = yag.send(to=RCPT, subject=subject(i), contents=SMALL_TEXT)
            else:
                result = yag.send(
                    to=RCPT, subject=subject(i), contents=[RICH_TEXT, RICH_HTML], attachments=pdf
                )
            if result is False:
                raise RuntimeError("yagmail could not send")
    finally:
        yag.close()
    return count


@contender("redmail", "one connection: `with email:` around all send() calls")
def run_redmail(port: int, kind: str, count: int, connections: int) -> int:
    from redmail import EmailSender

    pdf = pdf_path()
    email = EmailSender(host=HOST, port=port, use_starttls=False)
    with email:
        for i in range(count):
            if kind == "small":
                email.send(subject=subject(i), sender=SENDER, receivers=[RCPT], text=SMALL_TEXT)
            else:
                email.send(
                    subject=subject(i),
                    sender=SENDER,
                    receivers=[RCPT],
                    text=RICH_TEXT,
                    html=RICH_HTML,
                    attachments={PDF_NAME: pdf},
                )
    return count


@contender("python-emails", "one emails.backend.SMTPBackend passed as send(smtp=...)")
def run_python_emails(port: int, kind: str, count: int, connections: int) -> int:
    import emails
    from emails.backend import SMTPBackend

    pdf = pdf_path()
    backend = SMTPBackend(host=HOST, port=port, fail_silently=False)
    sent = 0
    try:
        for i in range(count):
            if kind == "small":
                msg = emails.Message(
                    subject=subject(i), text=SMALL_TEXT, mail_from=(SENDER_NAME, SENDER_ADDR)
                )
            else:
                msg = emails.Message(
                    subject=subject(i),
                    text=RICH_TEXT,
                    html=RICH_HTML,
                    mail_from=(SENDER_NAME, SENDER_ADDR),
                )
                with pdf.open("rb") as fh:
                    msg.attach(data=fh.read(), filename=PDF_NAME, content_type="application/pdf")
            response = msg.send(to=RCPT, smtp=backend)
            if response is None or response.status_code != 250:
                raise RuntimeError(f"python-emails: {response and response.status_text}")
            sent += 1
    finally:
        backend.close()
    return sent


# --- fluxmail --------------------------------------------------------------------------------


def _mailer(port: int) -> Any:
    from fluxmail import FluxMail

    return FluxMail(host=HOST, port=port, sender=SENDER)


def fluxmail_spec(i: int, kind: str, pdf: Path) -> dict[str, Any]:
    if kind == "small":
        return {"subject": subject(i), "recipients": RCPT, "body": SMALL_TEXT}
    return {
        "subject": subject(i),
        "recipients": RCPT,
        "body": RICH_HTML,
        "html_body": True,
        "plain_body": RICH_TEXT,
        "attachments": [pdf],
    }


def _check_batch(result: Any, count: int) -> int:
    if result["sent"] != count or result["failed"]:
        errors = result["errors"][:3]
        raise RuntimeError(f"fluxmail sent {result['sent']}/{count}: {errors}")
    return int(result["sent"])


@contender("fluxmail-bulk", "BulkSender(mailer).send_batch(list of dicts): one connection")
def run_fluxmail_bulk(port: int, kind: str, count: int, connections: int) -> int:
    from fluxmail import BulkSender

    pdf = pdf_path()
    messages = [fluxmail_spec(i, kind, pdf) for i in range(count)]
    result = BulkSender(_mailer(port)).send_batch(messages, progress=False)
    return _check_batch(result, count)


@contender("fluxmail-with", "with FluxMail(...) as m: m.create(...).send() per message")
def run_fluxmail_with(port: int, kind: str, count: int, connections: int) -> int:
    pdf = pdf_path()
    with _mailer(port) as mailer:
        for i in range(count):
            mailer.create(**fluxmail_spec(i, kind, pdf)).send()
    return count


@contender("fluxmail-async", "await BulkSender(mailer).send_batch_async(list, connections=N)")
def run_fluxmail_async(
    port: int, kind: str, count: int, connections: int, processes: int = 0
) -> int:
    from fluxmail import BulkSender

    pdf = pdf_path()

    async def main() -> Any:
        messages = [fluxmail_spec(i, kind, pdf) for i in range(count)]
        sender = BulkSender(_mailer(port), compose_processes=processes)
        return await sender.send_batch_async(messages, progress=False, connections=connections)

    return _check_batch(asyncio.run(main()), count)


REUSE["fluxmail-async-16"] = "send_batch_async(list, connections=16): a pool of 16"
RUNNERS["fluxmail-async-16"] = lambda port, kind, count, _c: run_fluxmail_async(
    port, kind, count, 16
)
REUSE["fluxmail-async-16p"] = (
    "send_batch_async(list, connections=16) with BulkSender(compose_processes=2)"
)
RUNNERS["fluxmail-async-16p"] = lambda port, kind, count, _c: run_fluxmail_async(
    port, kind, count, 16, 2
)


@contender(
    "lean-pipelining",
    "benchmarks/_lean.py: template MIME, no validation, one write per message, composes"
    " while nothing is in flight (a reference)",
)
def run_lean(port: int, kind: str, count: int, connections: int) -> int:
    import _lean

    texts = {"small": SMALL_TEXT, "plain": RICH_TEXT, "html": RICH_HTML}
    pdf = pdf_path() if kind == "rich" else None
    return _lean.run(HOST, port, kind, count, sender=SENDER, rcpt=RCPT, texts=texts, pdf=pdf)


# --- the worker entry points -----------------------------------------------------------------


def rss_mb() -> float:
    """Current resident set size in MB (from /proc, no psutil needed on Linux)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return float(psutil.Process().memory_info().rss / 2**20)


def run(name: str, port: int, kind: str, count: int, runs: int, warmup: int, probe: int) -> dict:
    """Probe (one message to the recording sink), warm up, then ``runs`` timed runs."""
    func = RUNNERS[name]
    if probe:
        func(probe, kind, 1, 1)
    if warmup:
        func(port, kind, warmup, 1)
    times, cpu = [], []
    for _ in range(runs):
        gc.collect()
        started, cpu_started = time.perf_counter(), time.process_time()
        sent = func(port, kind, count, 1)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        if sent != count:
            raise RuntimeError(f"{name}: the server took {sent} of {count} messages")
    return {"name": name, "count": count, "times": times, "cpu": cpu}


def _generator(kind: str, count: int, pdf: Path) -> Iterator[dict[str, Any]]:
    """The messages of ``kind``; ``big-N``: the rich message with an N MB file instead."""
    if kind.startswith("big-"):
        big = big_path(int(kind[4:]))
        for i in range(count):
            yield fluxmail_spec(i, "rich", pdf) | {"attachments": [big]}
        return
    for i in range(count):
        yield fluxmail_spec(i, kind, pdf)


class _PeakSampler:
    """Samples the RSS every few milliseconds in a thread: the high-water mark of one batch
    (``ru_maxrss`` would also count peaks from before the batch, such as imports)."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.peak = rss_mb()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def memory(name: str, port: int, kind: str, count: int, warmup: int) -> dict:
    """RSS growth over one batch of ``count`` messages fed from a generator."""
    pdf = pdf_path()
    if name == "fluxmail-bulk":
        from fluxmail import BulkSender

        def send(n: int) -> None:
            messages = _generator(kind, n, pdf)
            _check_batch(BulkSender(_mailer(port)).send_batch(messages, progress=False), n)

    elif name == "smtplib":

        def send(n: int) -> None:
            run_smtplib(port, kind, n, 1)

    else:
        raise SystemExit(f"memory mode knows fluxmail-bulk and smtplib, not {name}")
    send(min(warmup, 1) if kind.startswith("big-") else warmup)
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    with _PeakSampler() as sampler:
        send(count)
    seconds = time.perf_counter() - started
    gc.collect()
    after = rss_mb()
    return {
        "name": name,
        "count": count,
        "seconds": seconds,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "retained_mb": after - before,
        "peak_growth_mb": sampler.peak - before,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def wakeup(port: int, count: int, spins: tuple[int, ...] = (0, 25, 50, 100)) -> dict:
    """The machine, not a library: a raw-socket SMTP client that burns ``spin`` µs of CPU per
    message (as composing one would), in 2 round trips per message (envelope, then data: what
    fluxmail does today) and in 1 (data + the next envelope in one write). On a VM whose idle
    vCPUs halt at once, each wake-up of the sink costs far more than the spin itself."""
    import socket

    head = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: wake-up\r\n\r\n"
    payload = head + (b"x" * 70 + b"\r\n") * 18 + b".\r\n"
    envelope = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"

    def session(spin_us: int, one_rtt: bool) -> float:
        sock = socket.create_connection((HOST, port), timeout=30)
        buf = b""

        def replies(n: int) -> None:
            nonlocal buf
            while buf.count(b"\r\n") < n:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the sink closed the connection")
                buf += data
            buf = buf.split(b"\r\n", n)[-1]

        def spin() -> None:
            until = time.perf_counter() + spin_us / 1e6
            while time.perf_counter() < until:
                pass

        with sock:
            replies(1)
            sock.sendall(b"HELO bench\r\n")
            replies(1)
            started = time.perf_counter()
            if one_rtt:
                sock.sendall(envelope)
                replies(3)
                for i in range(count):
                    spin()
                    last = i == count - 1
                    sock.sendall(payload if last else payload + envelope)
                    replies(1 if last else 4)
            else:
                for _ in range(count):
                    spin()
                    sock.sendall(envelope)
                    replies(3)
                    sock.sendall(payload)
                    replies(1)
            seconds = time.perf_counter() - started
            sock.sendall(b"QUIT\r\n")
        return count / seconds

    rows = []
    for spin_us in spins:
        two = statistics.median(session(spin_us, False) for _ in range(3))
        one = statistics.median(session(spin_us, True) for _ in range(3))
        rows.append({"spin_us": spin_us, "two_rtt": two, "one_rtt": one})
    return {"name": "wakeup", "count": count, "rows": rows}


def profile(name: str, port: int, kind: str, count: int, warmup: int, top: int = 35) -> None:
    """Run one contender under cProfile (after a warm-up) and print the top functions."""
    import cProfile
    import pstats

    func = RUNNERS[name]
    if warmup:
        func(port, kind, warmup, 1)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(func, port, kind, count, 1)
    seconds = time.perf_counter() - started
    print(f"{name}, {kind}, {count} messages: {count / seconds:,.0f} msgs/s under cProfile")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["run", "memory", "profile", "wakeup", "list"])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kind", default="small", help="small, rich (memory: also big-MB)")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--probe-port", type=int, default=0, help="first send 1 message here")
    args = parser.parse_args(argv)
    if args.mode == "list":
        print(json.dumps(REUSE))
        return 0
    if args.mode == "wakeup":
        print(json.dumps(wakeup(args.port, args.count)))
        return 0
    if args.name not in RUNNERS:
        parser.error(f"unknown contender {args.name!r}; known: {', '.join(RUNNERS)}")
    if args.mode == "profile":
        profile(args.name, args.port, args.kind, args.count, args.warmup)
        return 0
    try:
        if args.mode == "run":
            a = args
            out = run(a.name, a.port, a.kind, a.count, a.runs, a.warmup, a.probe_port)
        else:
            out = memory(args.name, args.port, args.kind, args.count, args.warmup)
    except ImportError as exc:
        out = {"name": args.name, "error": f"not importable: {exc}"}
    except Exception as exc:
        out = {"name": args.name, "error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
