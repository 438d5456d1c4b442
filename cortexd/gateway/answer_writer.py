"""What a client connection writes: whole answers, streamed answers with backpressure, lingering closes.

The gateway's client connection (client_connection.py) is an asyncio.Protocol that
extends AnswerWriter: this half holds the transport's output side. A whole answer
(answers.Answer: a replica's small answer, or the gateway's own) goes out in one write,
two when its body is large. A streamed answer (a replica's chunked or large one, relayed
as it comes; request_path.py) goes out piece by piece, each write followed by `drain()`,
which waits while the transport's buffer is over its high-water mark: a slow client
slows the replica's answer through TCP, and the gateway never buffers a large answer.
A client that takes nothing for `send_timeout` seconds (nginx's send_timeout), while an
answer waits for room or a closed connection's last answer is still buffered, is cut off,
so it holds no replica slot, upstream connection or socket for ever.
A refused connection closes lingering (nginx's lingering_close): it says its answer,
half-closes, drops what the client still sends, and goes when the client closes or
after LINGER seconds, so a client still sending never loses the answer to a reset.
"""

from __future__ import annotations

import asyncio

from cortexd.gateway.answers import Answer, answer_head
from cortexd.gateway.client_request import ClientRequest, wake
from cortexd.gateway.relay import STATUS_LINES

LINGER = 2.0  # seconds a refused connection is read (and dropped) before it closes
_SEPARATE_WRITE = 65536  # bodies at least this large go out in a write of their own


def stream_head(status: int, headers: list[tuple[bytes, bytes]], rid: str, version: tuple[int, int],
                length: bytes | None, keep_alive: bool) -> tuple[bytes, bool, bool]:
    """(the head of a streamed answer, whether its body goes chunked, whether the connection
    is kept alive after it): without a length an HTTP/1.0 client reads to the close (pure)."""
    chunked = length is None and version >= (1, 1)
    if length is None and not chunked:
        keep_alive = False
    lines = [b"HTTP/%d.%d " % version + (STATUS_LINES.get(status) or b"%d Unknown" % status)]
    for name, value in headers:
        lines.append(name + b": " + value)
    lines.append(b"X-Request-Id: " + rid.encode())  # ASCII: checked, or made by the gateway
    if length is not None:
        lines.append(b"Content-Length: " + length)
    elif chunked:
        lines.append(b"Transfer-Encoding: chunked")
    if not keep_alive:
        lines.append(b"Connection: close")
    elif version < (1, 1):
        lines.append(b"Connection: keep-alive")
    lines.append(b"\r\n")
    return b"\r\n".join(lines), chunked, keep_alive


class AnswerWriter(asyncio.Protocol):
    """The output side of a client connection: answers, backpressure, the lingering close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send_timeout: float) -> None:
        self.loop = loop
        self.send_timeout = send_timeout
        self.transport: asyncio.Transport | None = None
        self.lingering = False  # refused: what the client still sends is dropped, then it closes
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._chunked = False  # the streamed answer being written goes chunked
        self.started = False  # the answer to the current request has started going out
        self.stream_keep_alive = True  # the streamed answer written last leaves the connection open
        self._close = False  # no request after those parsed: close once they are answered

    # -- asyncio's flow control -------------------------------------------------------------

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter, self._drain = self._drain, None
        wake(waiter)

    async def drain(self) -> None:
        """Wait while the client takes less than is written (raises ConnectionError once it is gone)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        if self._write_paused:
            self._drain = waiter = self.loop.create_future()
            cut = self.loop.call_later(self.send_timeout, self.send_timed_out)
            try:
                await waiter
            finally:
                cut.cancel()
            if self.transport is None:
                raise ConnectionResetError("the client closed the connection")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self._wake_drain()

    def send_timed_out(self) -> None:
        """The client took nothing of its answer for send_timeout seconds: it is cut off."""
        self.abort()

    def last_answer(self) -> bool:
        """Whether the answer being written is the connection's last (client_connection.py knows better)."""
        return self._close

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        # nothing goes out after the lingering close's half-close (uvloop raises on it)
        if transport is not None and not self.lingering and not transport.is_closing():
            transport.write(data)

    def write_continue(self) -> None:
        """Tell a client that waits for it (Expect: 100-continue) to send its body."""
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def write_answer(self, request: ClientRequest, answer: Answer, keep_alive: bool) -> None:
        """Write a whole answer to `request` (no body for HEAD; Connection: close unless `keep_alive`)."""
        self.started = True
        head = answer_head(answer, request.version, keep_alive, request.method == "HEAD")
        body = answer.body
        if answer.head_only or request.method == "HEAD" or not body:
            self.write(head)
        elif len(body) < _SEPARATE_WRITE:
            self.write(head + body)
        else:
            self.write(head)
            self.write(body)

    def start_stream(self, request: ClientRequest, status: int, headers: list[tuple[bytes, bytes]], rid: str,
                     length: bytes | None, closing: bool) -> None:
        """Write the head of a streamed answer (`closing`: the connection closes after it)."""
        self.started = True
        keep_alive = request.keep_alive and request.complete and not self.last_answer() and not closing
        head, self._chunked, self.stream_keep_alive = stream_head(status, headers, rid, request.version, length,
                                                                  keep_alive)
        self.write(head)

    async def send(self, data: bytes) -> None:
        """A piece of the streamed answer's body, once the client has room for it."""
        await self.drain()
        self.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)

    def end_stream(self) -> None:
        if self._chunked:
            self.write(b"0\r\n\r\n")

    # -- closing ---------------------------------------------------------------------------

    def abort(self) -> None:
        """Close at once, with a reset: an answer already started cannot be finished honestly."""
        transport = self.transport
        if transport is not None:
            transport.abort()

    def force_close(self) -> None:
        """Close at once (what is written still goes out first, within the send timeout)."""
        transport = self.transport
        if transport is not None:
            transport.close()
            if transport.get_write_buffer_size():  # a client that reads nothing would keep it open
                self.loop.call_later(self.send_timeout, self.send_timed_out)

    def linger(self) -> None:
        """Half-close after what was written, drop what the client still sends, close after LINGER."""
        transport = self.transport
        if transport is None:
            return
        self.lingering = True
        try:
            transport.write_eof()
        except (OSError, RuntimeError):  # the client is gone already
            self.force_close()
            return
        self.loop.call_later(LINGER, self.force_close)
