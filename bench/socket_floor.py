"""What one HTTP-sized exchange costs a server in the kernel: TCP on loopback against a unix socket.

Run by hand (never a test):

    python bench/socket_floor.py                  # 3 rounds, each kind in turn, 32 connections, 4 s
    python bench/socket_floor.py --rounds 5 --duration 8

A server on uvloop that answers each read with a small HTTP answer and no other work (no parsing,
no Python beyond the callback), and a client process keeping 32 connections busy, each sending the
next request when its answer comes. Prints the exchanges per second and the server process's CPU
time per exchange (from /proc), for a TCP connection on 127.0.0.1 and for a unix socket, in turn:
what the gateway's hop to a replica on the same host saves over a unix socket (the process backend's
one-process replicas since 2026-12-04; issue 20: the two `send`s were about half of the gateway's
samples in py-spy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time

import uvloop

REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n" + b'{"x": [1, 2, 3]}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + b'{"ok":true}'


class Answering(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(ANSWER)


class Asking(asyncio.Protocol):
    def __init__(self, done: list[int], deadline: float):
        self.done, self.deadline = done, deadline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.done[0] += 1
        if time.monotonic() < self.deadline:
            self.transport.write(REQUEST)


def serve(address: int | str, ready: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if isinstance(address, int):
            await loop.create_server(Answering, "127.0.0.1", address)
        else:
            await loop.create_unix_server(Answering, address)
        os.write(ready, b"1")
        await asyncio.sleep(3600)

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, connections: int, duration: float, tmp: str) -> tuple[float, float]:
    """(exchanges per second, server CPU us per exchange) for `kind` tcp or unix."""
    if kind == "tcp":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address: int | str = s.getsockname()[1]
    else:
        address = os.path.join(tmp, f"server-{time.monotonic_ns()}.sock")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the server, a process of its own (killed by PID below)
        try:
            serve(address, ready_w)
        finally:
            os._exit(0)
    try:
        os.read(ready_r, 1)

        async def load() -> tuple[float, float]:
            loop = asyncio.get_running_loop()
            done = [0]
            deadline = time.monotonic() + duration
            before = cpu_seconds(pid)
            for _ in range(connections):
                if isinstance(address, int):
                    await loop.create_connection(lambda: Asking(done, deadline), "127.0.0.1", address)
                else:
                    await loop.create_unix_connection(lambda: Asking(done, deadline), address)
            await asyncio.sleep(duration + 0.2)
            return done[0] / duration, 1e6 * (cpu_seconds(pid) - before) / max(done[0], 1)

        return uvloop.run(load())
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(ready_w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--connections", type=int, default=32)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind in ("tcp", "unix") if r % 2 == 0 else ("unix", "tcp"):
                rate, cpu = measure(kind, args.connections, args.duration, tmp)
                print(f"round {r + 1} {kind:>4}: {rate:9.0f} exchanges/s, server CPU {cpu:5.1f} us per exchange")


if __name__ == "__main__":
    main()
