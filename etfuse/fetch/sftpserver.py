"""A local SFTP server (asyncssh) serving one folder read-only, for the demo and the tests.

It listens on 127.0.0.1 only, with a fresh host key written to a ``known_hosts`` file and one
user name and password; the served folder is the server's root (chroot).  ``read_hook`` lets tests
inject faults into file reads (stall, cut the connection, end the file early).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh

#: ``hook(server, path, offset, size)`` -> None to read normally, or bytes to answer instead
ReadHook = Callable[["_ReadOnlySftp", str, int, int], Awaitable[bytes | None]]


class _ReadOnlySftp(asyncssh.SFTPServer):
    hook: ReadHook | None = None

    def __init__(self, chan, root: str) -> None:
        super().__init__(chan, chroot=root.encode())
        self.paths: dict[int, str] = {}

    def open(self, path, pflags, attrs):
        if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND):
            raise asyncssh.SFTPPermissionDenied("read-only server")
        handle = super().open(path, pflags, attrs)
        self.paths[id(handle)] = path.decode() if isinstance(path, bytes) else str(path)
        return handle

    async def read(self, file_obj, offset, size):
        if self.hook is not None:
            answer = await self.hook(self, self.paths.get(id(file_obj), ""), offset, size)
            if answer is not None:
                return answer
        return super().read(file_obj, offset, size)

    def remove(self, path):
        raise asyncssh.SFTPPermissionDenied("read-only server")

    def rename(self, oldpath, newpath):
        raise asyncssh.SFTPPermissionDenied("read-only server")

    def abort(self) -> None:
        """Cut the SSH connection at once (a network failure)."""
        self.channel.get_connection().abort()


class LocalSftpServer:
    """``with LocalSftpServer(root, "user", "pw", folder) as server:`` -> ``server.url``, ``server.known_hosts``."""

    def __init__(self, root: Path, username: str, password: str, state_dir: Path, *,
                 read_hook: ReadHook | None = None) -> None:
        self.root, self.username, self.password = Path(root), username, password
        self.state_dir = Path(state_dir)
        self.read_hook = read_hook
        self.port = 0
        self.known_hosts = self.state_dir / "known_hosts"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="sftp-server")
        self._server: Any = None
        self._connections: list = []

    @property
    def url(self) -> str:
        return f"sftp://127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalSftpServer":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        username, password, root, hook = self.username, self.password, str(self.root), self.read_hook
        connections = self._connections

        class Auth(asyncssh.SSHServer):
            def connection_made(self, conn) -> None:
                connections.append(conn)

            def begin_auth(self, name: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, name: str, given: str) -> bool:
                return name == username and given == password

        def sftp(chan):
            server = _ReadOnlySftp(chan, root)
            server.hook = hook
            return server

        async def start():
            return await asyncssh.create_server(Auth, "127.0.0.1", 0, server_host_keys=[key], sftp_factory=sftp,
                                                allow_scp=False)

        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(30)
        self.port = self._server.sockets[0].getsockname()[1]
        public = key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            await self._server.wait_closed()
            for conn in self._connections:          # the clients' connections too, so no task is left pending
                conn.close()
            for conn in self._connections:
                await asyncio.wait_for(conn.wait_closed(), 5)
        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
