"""A TCP relay between a process under test and a real server, which a test can cut and restore:
the server stays up and untouched, the path to it fails for real (connections refused and dropped).
It can also hold a connection at a known point (`hold_after`): once that many bytes have come from
the server on one connection, nothing more is relayed on it until the test releases or cuts it, so a
test can stop a server in the middle of a transfer whatever the machine's speed."""
from __future__ import annotations

import socket
import threading

from tests.serve_harness import free_port


class TcpRelay:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._hold_after: int | None = None
        self.held = threading.Event()      # set when a connection reached the byte count of hold_after
        self._released = threading.Event()
        self.restore()

    def hold_after(self, server_bytes: int) -> None:
        """From now on, the first connection that receives `server_bytes` more bytes from the server
        stops there (the rest waits in the relay) until release() or cut(); `held` is set then."""
        self.held.clear()
        self._released.clear()
        self._hold_after = server_bytes

    def release(self) -> None:
        """Let a held connection go on, and hold no other."""
        self._hold_after = None
        self._released.set()

    def restore(self) -> None:
        """Accept and relay connections again."""
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="relay-accept").start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones (a held one too)."""
        listener, self._listener = self._listener, None
        self.release()
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            for sock in (client, upstream):  # no Nagle: a request-reply protocol would wait ~40 ms a round trip
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            for source, target, from_server in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, target, from_server), daemon=True,
                                 name="relay-pump").start()

    def _take_hold(self) -> bool:
        """True for the one connection that is to be held."""
        with self._lock:
            if self.held.is_set():
                return False
            self.held.set()
            return True

    def _pump(self, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        counted = 0  # bytes from the server relayed on this connection while a hold was armed
        try:
            while data := source.recv(65536):
                budget = self._hold_after if from_server else None
                if budget is not None and counted + len(data) >= budget and self._take_hold():
                    head = budget - counted
                    target.sendall(data[:head])
                    self._released.wait()
                    if self._listener is None:
                        break  # cut while held: the rest is never relayed
                    data = data[head:]
                elif budget is not None:
                    counted += len(data)
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.cut()
