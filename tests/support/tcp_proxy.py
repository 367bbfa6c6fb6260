"""A TCP proxy on 127.0.0.1 in front of a real server (the broker, a database), that a test can
use to make the network fail without touching the server: cut every connection,
refuse new ones for a while, or freeze (keep connections open, pass nothing on,
as a broker on a host that stopped answering)."""

from __future__ import annotations

import selectors
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.refusing = threading.Event()
        self.frozen = threading.Event()
        self.stopping = threading.Event()
        self.cut_requested = threading.Event()
        self.cut_done = threading.Event()
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Only this thread touches the selector and the sockets.
        while not self.stopping.is_set():
            if self.cut_requested.is_set():
                for sock in list(self.pairs):
                    self._close_pair(sock)
                self.cut_requested.clear()
                self.cut_done.set()
            for key, _ in self.selector.select(timeout=0.05):
                if key.fileobj is self.listener:
                    self._accept()
                elif not self.frozen.is_set():
                    self._pass_on(key.fileobj)
            if self.frozen.is_set():  # the unread sockets stay readable: do not spin
                self.stopping.wait(0.02)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.refusing.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.pairs[client] = upstream
        self.pairs[upstream] = client
        for sock in (client, upstream):
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)

    def _pass_on(self, sock: socket.socket) -> None:
        peer = self.pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
                return
        except OSError:
            pass
        self._close_pair(sock)

    def _close_pair(self, sock: socket.socket) -> None:
        peer = self.pairs.pop(sock, None)
        if peer is not None:
            self.pairs.pop(peer, None)
        for each in (sock, peer):
            if each is None:
                continue
            try:
                self.selector.unregister(each)
            except (KeyError, ValueError):
                pass
            each.close()

    def cut(self) -> None:
        """Close every connection now (both sides see it at once)."""
        self.cut_done.clear()
        self.cut_requested.set()
        assert self.cut_done.wait(5), "the proxy did not cut its connections"

    def refuse(self) -> None:
        """Close new connections as soon as they are accepted, until ``resume()``."""
        self.refusing.set()

    def freeze(self) -> None:
        """Pass nothing on, in either direction, until ``resume()``."""
        self.frozen.set()

    def resume(self) -> None:
        self.refusing.clear()
        self.frozen.clear()

    def close(self) -> None:
        self.cut()
        self.stopping.set()
        self.thread.join(5)
        self.selector.close()
        self.listener.close()
