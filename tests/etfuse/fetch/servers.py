"""Real servers on loopback for the fetch tests: an HTTP server (http.server in a thread) serving a
folder as directory listings, with basic auth and injectable faults.  (The SFTP server is
etfuse.fetch.sftpserver.LocalSftpServer, also used by the demo.)"""

from __future__ import annotations

import base64
import functools
import os
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Faults:
    """What the servers do wrong: per file name, ``cut`` (send half, then close; ``cut_times`` times),
    ``truncate`` (announce the whole size on HEAD, send a shorter body), ``stall`` (send nothing)."""

    def __init__(self) -> None:
        self.cut: dict[str, int] = {}
        self.truncate: set[str] = set()
        self.stall: set[str] = set()
        self.release = threading.Event()
        self.gets: list[str] = []


class _Handler(SimpleHTTPRequestHandler):
    faults: Faults
    credentials: str | None

    def log_message(self, *args) -> None:
        pass

    def _authorised(self) -> bool:
        if self.credentials is None:
            return True
        if self.headers.get("Authorization") == f"Basic {self.credentials}":
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="drop"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_HEAD(self) -> None:
        if self._authorised():
            super().do_HEAD()

    def do_GET(self) -> None:
        if not self._authorised():
            return
        name = self.path.rsplit("/", 1)[-1]
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return super().do_GET()
        self.faults.gets.append(name)
        data = path.read_bytes()
        if name in self.faults.stall:
            self.faults.release.wait(20)
            return
        body = data[: len(data) // 2] if name in self.faults.truncate else data
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.faults.cut.get(name, 0) > 0:
            self.faults.cut[name] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class HttpServer:
    """``with HttpServer(root, faults, user="u", password="p") as server: server.url``."""

    def __init__(self, root: Path, faults: Faults, *, user: str | None = None, password: str | None = None) -> None:
        creds = base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        handler = type("Handler", (_Handler,), {"faults": faults, "credentials": creds})
        self.faults = faults
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "HttpServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.faults.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def make_files(root: Path, names: list[str], size: int = 300_000, seed: int = 0) -> dict[str, bytes]:
    """Files of random bytes under ``root`` (relative names); returns their contents."""
    out = {}
    for k, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size + k)
        path.write_bytes(data)
        out[name] = data
    return out


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)
