"""A TCP pass-through to a real server that loses one response: the server went away mid-push.

``CuttingProxy(upstream_port, marker, after)`` forwards every connection byte for byte. When the
``after``-th request whose bytes contain ``marker`` has gone to the server, the server's answer
to it is thrown away and both sides of that connection are closed, once: the client sees the
connection drop after the server has done the work (the hardest case for a resume). Everything
afterwards passes through again, like a server that came back.
"""

from __future__ import annotations

import socket
import threading


class CuttingProxy:
    def __init__(self, upstream_port: int, marker: bytes, after: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.marker = marker
        self.after = after
        self.seen = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            state = {"drop_next_response": False}
            threading.Thread(target=self._pump_up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(server, client, state), daemon=True).start()

    def _pump_up(self, src: socket.socket, dst: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := src.recv(65536):
                if self.marker in data and not self.cut.is_set():
                    with self._lock:
                        self.seen += data.count(self.marker)
                        if self.seen >= self.after:
                            state["drop_next_response"] = True
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(dst)

    def _pump_down(self, src: socket.socket, dst: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := src.recv(65536):
                if state["drop_next_response"] and not self.cut.is_set():
                    self.cut.set()
                    _close(src)
                    _close(dst)
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(dst)

    def close(self) -> None:
        self._closed = True
        _close(self.listener)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
