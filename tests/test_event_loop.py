"""The app server's Tornado IOLoop (hurricane.http.eventloop.LazyReaderIOLoop) and its
connections' socket options, on real TCP sockets and on both loops ``--loop`` offers."""

import asyncio
import socket

import pytest
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from hurricane.http.eventloop import LazyReaderIOLoop, install_tornado_ioloop, loop_factory
from hurricane.http.server import ConnectionLimits, GuardedHTTPServer, GuardedIOStream


class CountingLoop:
    """The asyncio loop, counting the reader (un)registrations Tornado asks of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.added = 0
        self.removed = 0

    def add_reader(self, *args):
        self.added += 1
        return self.loop.add_reader(*args)

    def remove_reader(self, *args):
        self.removed += 1
        return self.loop.remove_reader(*args)

    def __getattr__(self, name):
        return getattr(self.loop, name)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    return client, server


async def until(condition, what: str, timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds (a busy CI machine may be slow)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def run_on(loop_name: str, main) -> None:
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        runner.run(main())


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_a_paused_reader_stays_registered_and_reads_nothing_unasked(loop_name):
    """Tornado stops listening while a request waits unread in the stream's buffer and
    listens again when the server reads it: here the socket stays registered in
    between (no reader removed and added per request), yet the stream still reads
    nothing it was not asked for: bytes that arrive meanwhile wait in the kernel and
    are read, in order, once asked for."""

    async def main() -> None:
        ioloop = install_tornado_ioloop()
        assert isinstance(ioloop, LazyReaderIOLoop)
        assert IOLoop.current() is ioloop
        counting = CountingLoop(ioloop.selector_loop)
        ioloop.selector_loop = counting
        client, server = tcp_pair()
        stream = IOStream(server)
        fd = server.fileno()
        try:
            # A keep-alive connection: each request arrives before the server asks for
            # it (the stream listens only to notice a close), as under load.
            stream.set_close_callback(lambda: None)
            for number in range(20):
                client.sendall(b"request %d\n" % number)
                # Read into the stream's buffer, unasked.
                await until(lambda: stream._read_buffer_size > 0, "the request in the buffer")
                assert fd in ioloop.readers, "the paused reader was removed"
                line = await stream.read_until(b"\n")
                assert line == b"request %d\n" % number
                stream.set_close_callback(lambda: None)  # what HTTP1Connection does
            assert counting.added == 1 and counting.removed == 0

            # Bytes arriving while a request waits unread: the registered reader fires
            # once, is removed then, and the stream reads none of them.
            client.sendall(b"first\n")
            await until(lambda: stream._read_buffer_size > 0, "the first request in the buffer")
            buffered = stream._read_buffer_size
            client.sendall(b"second\n" + b"x" * 100_000 + b"\n")
            await until(lambda: fd not in ioloop.readers, "the unwanted reader's removal")
            await asyncio.sleep(0.05)
            assert stream._read_buffer_size == buffered
            assert counting.removed == 1
            assert await stream.read_until(b"\n") == b"first\n"
            assert await stream.read_until(b"\n") == b"second\n"
            assert len(await stream.read_until(b"\n")) == 100_001
        finally:
            stream.close()
            client.close()
        assert fd not in ioloop.readers and fd not in ioloop.unwanted_readers

    run_on(loop_name, main)


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_a_paused_reader_notices_the_client_closing(loop_name):
    """A client that closes while its stream is paused is noticed once the server reads
    again, as with Tornado's own IOLoop: the read fails, the close callback runs."""

    async def main() -> None:
        install_tornado_ioloop()
        client, server = tcp_pair()
        stream = IOStream(server)
        closed = asyncio.Event()
        stream.set_close_callback(closed.set)
        client.sendall(b"last request\n")
        await asyncio.sleep(0.01)
        client.close()
        await asyncio.sleep(0.01)
        assert await stream.read_until(b"\n") == b"last request\n"
        with pytest.raises(Exception) as raised:
            await asyncio.wait_for(stream.read_until(b"\n"), 5)
        assert type(raised.value).__name__ == "StreamClosedError"
        await asyncio.wait_for(closed.wait(), 5)

    run_on(loop_name, main)


def test_connections_have_nagle_off_for_their_whole_life():
    """Every accepted connection has TCP_NODELAY from the start, and Tornado's turning it
    back on after each response (two setsockopt calls per request) is skipped."""

    async def main() -> None:
        install_tornado_ioloop()
        server = GuardedHTTPServer(lambda request: None, limits=ConnectionLimits.defaults())
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        server.add_sockets([listener])
        client = socket.create_connection(listener.getsockname())
        try:
            for _ in range(100):
                if server._connections:
                    break
                await asyncio.sleep(0.01)
            (connection,) = server._connections
            stream = connection.stream
            assert isinstance(stream, GuardedIOStream)
            nodelay = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert nodelay
            stream.set_nodelay(False)  # what Tornado does after each response
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            client.close()
            server.stop()
            await server.close_all_connections()

    run_on("uvloop", main)
