"""A small real TCP proxy on loopback that can swallow the server's answers.

Used to make a write reach the server while its response never reaches the client,
exactly what a WAN link failure after sending looks like.
"""

from __future__ import annotations

import select
import socket
import threading

from etcdproc import free_port

#: Bytes moved per read.
CHUNK_BYTES = 65536
#: Poll period of the pump threads (how fast stop() is noticed).
POLL_S = 0.05


class TcpProxy:
    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.drop_responses = False  # server -> client bytes are read and thrown away
        self.bytes_to_server = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(16)
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self._sock], [], [], POLL_S)
            if not r:
                continue
            try:
                client, _ = self._sock.accept()
                server = socket.create_connection(self.target, timeout=2)
            except OSError:
                continue
            self._conns += [client, server]
            t = threading.Thread(target=self._pump, args=(client, server), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                r, _, _ = select.select([client, server], [], [], POLL_S)
                for s in r:
                    data = s.recv(CHUNK_BYTES)
                    if not data:
                        return
                    if s is client:
                        self.bytes_to_server += len(data)
                        server.sendall(data)
                    elif not self.drop_responses:
                        client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close_connections(self) -> None:
        for s in self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self.close_connections()
        for t in self._threads:
            t.join(2)
        self._sock.close()
