"""A bounded HTTP server for one endpoint, /metrics: what a scrape needs and nothing an
attacker can hold open.

prometheus_client's server starts a thread per connection with no read timeout (slowloris
held 500 threads) and reads headers up to its own large limits. Here: at most
MAX_CONNECTIONS handlers at once (the rest get a 503 from the accept loop, unread), the request
head must arrive whole within HEAD_DEADLINE_S and MAX_HEAD_BYTES, one request per connection,
and the answer is sent within SEND_DEADLINE_S.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable

MAX_CONNECTIONS = 16
HEAD_DEADLINE_S = 2.0  # a scraper sends its request at once
SEND_DEADLINE_S = 10.0
MAX_HEAD_BYTES = 8192
PATHS = (b"/metrics", b"/")

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def response(
    code: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8"
) -> bytes:
    if not body and code != 200:
        body = f"{code} {REASONS[code]}\n".encode()
    head = (
        f"HTTP/1.1 {code} {REASONS[code]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


BUSY = response(503)


class _Handler(socketserver.BaseRequestHandler):
    server: BoundedHTTPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        head = self._read_head(sock)
        if isinstance(head, int):
            self._send(sock, response(head))
            return
        if head is None:
            return  # the client went away
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._send(sock, response(400))
            return
        method, target = parts[0], parts[1]
        if method not in (b"GET", b"HEAD"):
            self._send(sock, response(405))
            return
        if target.split(b"?", 1)[0] not in PATHS:
            self._send(sock, response(404))
            return
        try:
            body, content_type = self.server.render()
        except Exception:
            self._send(sock, response(500))
            raise
        whole = response(200, body, content_type)
        self._send(sock, whole[: whole.index(b"\r\n\r\n") + 4] if method == b"HEAD" else whole)

    @staticmethod
    def _read_head(sock: socket.socket) -> bytes | int | None:
        """The request line and headers, or the status code that refuses them."""
        deadline = time.monotonic() + HEAD_DEADLINE_S
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return 408
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                return 408
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_HEAD_BYTES:
                return 431
        return data.replace(b"\n\n", b"\r\n\r\n", 1) if b"\r\n\r\n" not in data else data

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        sock.settimeout(SEND_DEADLINE_S)
        with contextlib.suppress(OSError):  # the client left or would not read
            sock.sendall(data)


class BoundedHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self, host: str, port: int, render: Callable[[], tuple[bytes, str]], limit: int
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.render = render
        self.slots = threading.BoundedSemaphore(limit)
        super().__init__((host, port), _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if not self.slots.acquire(blocking=False):
            # Full: answer from the accept loop without reading, so no thread is spent on it.
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def start(
    host: str,
    port: int,
    render: Callable[[], tuple[bytes, str]],
    limit: int = MAX_CONNECTIONS,
) -> tuple[BoundedHTTPServer, threading.Thread]:
    """Listen and serve in a daemon thread; OSError when the address can't be had."""
    server = BoundedHTTPServer(host, port, render, limit)
    thread = threading.Thread(target=server.serve_forever, name="infw-metrics", daemon=True)
    thread.start()
    return server, thread
