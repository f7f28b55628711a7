"""A TCP proxy on 127.0.0.1 that adds latency: every chunk waits ``delay`` seconds in each
direction (so the round trip grows by ``2 * delay``), in order, without limiting bandwidth:
chunks in flight overlap, as on a long link, so a client that pipelines gains from it.

    python benchmarks/_proxy.py --target 127.0.0.1:PORT --rtt-ms 20 [--max-seconds 3600]

It prints ``listening on PORT`` once it is ready, then runs until killed or until
``--max-seconds`` passed. ``bench.py`` starts it as a separate process, so its own CPU use
never competes with the client under test for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def pump() -> None:
        while True:
            try:
                data = await reader.read(1 << 16)
            except ConnectionError:
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    pumping = asyncio.create_task(pump())
    try:
        await deliver()
    except ConnectionError:
        pass
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await pumping


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def serve(target_host: str, target_port: int, delay: float, max_seconds: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        _nodelay(client_w)
        _nodelay(server_w)
        try:
            await asyncio.gather(
                _pipe(client_r, server_w, delay), _pipe(server_r, client_w, delay)
            )
        finally:
            for w in (client_w, server_w):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1000)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    async with server:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.serve_forever(), max_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the real server")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="added round trip (ms)")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the proxy only forwards to loopback")
    asyncio.run(serve(host, int(port), args.rtt_ms / 2000.0, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
