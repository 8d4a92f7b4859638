"""A TCP proxy in front of the rig's AMQP port that can go silent: from then
on it swallows everything both ways and keeps both sockets open, so the broker
sees a peer that neither answers nor closes (a busy queue process, a host that
vanished, a network that dropped the flow)."""

from __future__ import annotations

import socket
import threading

import pika.frame
import pika.spec


class SilentProxy:
    """Relays to 127.0.0.1:`upstream_port` until `cut()`, or, with
    `on_declare`, until a client sends a queue.declare."""

    def __init__(self, upstream_port: int = 5672, *, on_declare: bool = False):
        self.upstream = ("127.0.0.1", upstream_port)
        self.on_declare = on_declare
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.silent.set()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, from_client):
        pending, header_seen = b"", False
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                if not self.silent.is_set():  # a close passes only while the proxy relays
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            if from_client and self.on_declare:
                pending += data
                if not header_seen and len(pending) >= 8:
                    pending, header_seen = pending[8:], True
                while header_seen:
                    used, frame = pika.frame.decode_frame(pending)
                    if not used:
                        break
                    pending = pending[used:]
                    if isinstance(frame, pika.frame.Method) and isinstance(frame.method, pika.spec.Queue.Declare):
                        self.silent.set()
            if not self.silent.is_set():
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
