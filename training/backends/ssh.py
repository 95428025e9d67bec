"""SSH/SFTP transport to a cluster's login node (paramiko), for the Slurm backend.

Security choices, and why:
- Keys only, no agent, no password: LUMI accepts nothing else, and a platform must not depend on
  whatever agent happens to run next to the worker.
- Host keys are checked against one known_hosts file with RejectPolicy: an unknown or changed
  host key refuses the connection (a man in the middle would otherwise receive job data and
  could fake results). Nothing is ever added to the file.
- Commands are argument lists joined with `shlex.join`, so every argument reaches the remote
  shell as one quoted word; callers never pass shell text.

Every failure to reach or talk to the host raises `ClusterUnreachable`; a poller treats that as
"unknown, ask again later", never as a finished job. One `SshSession` is one connection, opened
for one backend operation and closed after it: nothing half-dead is cached between polls.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import socket
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import paramiko

# A poller connects every few seconds; paramiko's per-connection INFO lines would drown the log.
logging.getLogger("paramiko").setLevel(logging.WARNING)


class ClusterUnreachable(Exception):
    """The login node could not be reached, refused us, or the connection broke mid-way."""


class HostKeyRejected(ClusterUnreachable):
    """The host's key is not the one in known_hosts (or is missing from it)."""


class RemoteCommandFailed(Exception):
    """A remote command ran and exited non-zero (the cluster answered: not a transport error)."""

    def __init__(self, argv: Sequence[str], rc: int, stdout: str, stderr: str):
        self.argv, self.rc, self.stdout, self.stderr = list(argv), rc, stdout, stderr
        super().__init__(f"{argv[0]} exited {rc}: {(stderr or stdout).strip()[:500]}")


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to log in."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    timeout: float = 20.0
    key_passphrase: str | None = None

    @classmethod
    def from_settings(cls) -> SshTarget:
        from django.conf import settings

        return cls(
            host=settings.SLURM_SSH_HOST,
            port=settings.SLURM_SSH_PORT,
            user=settings.SLURM_SSH_USER,
            key_file=settings.SLURM_SSH_KEY_FILE,
            known_hosts=settings.SLURM_SSH_KNOWN_HOSTS,
            timeout=float(settings.SLURM_SSH_TIMEOUT),
            key_passphrase=settings.SLURM_SSH_KEY_PASSPHRASE or None,
        )


@dataclass
class RemoteResult:
    rc: int
    stdout: str
    stderr: str


_TRANSPORT_ERRORS = (paramiko.SSHException, OSError, EOFError, socket.timeout)


class SshSession:
    """One authenticated connection: run commands, move files."""

    def __init__(self, target: SshTarget):
        if not target.user:
            raise ClusterUnreachable("SLURM_SSH_USER is not set")
        if not os.path.isfile(target.known_hosts):
            raise HostKeyRejected(f"known_hosts file {target.known_hosts} does not exist")
        self.target = target
        self._client = paramiko.SSHClient()
        # Only this file; the user's ~/.ssh/known_hosts is not consulted.
        self._client.load_host_keys(target.known_hosts)
        self._client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._sftp: paramiko.SFTPClient | None = None
        try:
            self._client.connect(
                hostname=target.host,
                port=target.port,
                username=target.user,
                key_filename=target.key_file,
                passphrase=target.key_passphrase,
                timeout=target.timeout,
                banner_timeout=target.timeout,
                auth_timeout=target.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            self._client.close()
            raise HostKeyRejected(f"host key of {target.host} does not match known_hosts") from exc
        except paramiko.SSHException as exc:
            self._client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyRejected(
                    f"{target.host}:{target.port} is not in {target.known_hosts}"
                ) from exc
            raise ClusterUnreachable(f"SSH to {target.host}:{target.port} failed: {exc}") from exc
        except _TRANSPORT_ERRORS as exc:
            self._client.close()
            raise ClusterUnreachable(
                f"cannot connect to {target.host}:{target.port}: {exc}"
            ) from exc

    # -- commands ---------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, check: bool = True,
            timeout: float | None = None) -> RemoteResult:
        """Run one command; every argument is quoted, so no argument can become shell syntax."""
        if not argv:
            raise ValueError("empty command")
        command = shlex.join(str(a) for a in argv)
        try:
            _, stdout, stderr = self._client.exec_command(
                command, timeout=timeout or max(self.target.timeout, 60.0)
            )
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            rc = stdout.channel.recv_exit_status()
        except _TRANSPORT_ERRORS as exc:
            raise ClusterUnreachable(f"{argv[0]} over SSH failed: {exc}") from exc
        if rc == -1:  # the channel closed without an exit status: the connection broke
            raise ClusterUnreachable(f"{argv[0]}: connection closed before the command ended")
        if check and rc != 0:
            raise RemoteCommandFailed(argv, rc, out, err)
        return RemoteResult(rc, out, err)

    # -- files ------------------------------------------------------------------------------
    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self._client.open_sftp()
            except _TRANSPORT_ERRORS as exc:
                raise ClusterUnreachable(f"SFTP to {self.target.host} failed: {exc}") from exc
        return self._sftp

    def makedirs(self, remote: str, mode: int = 0o750) -> None:
        path = PurePosixPath(remote)
        missing = []
        while str(path) not in ("/", "."):
            if self.stat(str(path)) is not None:
                break
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            try:
                self.sftp.mkdir(str(folder), mode)
            except OSError as exc:  # created concurrently
                if self.stat(str(folder)) is None:
                    raise ClusterUnreachable(f"cannot create {folder}: {exc}") from exc

    def stat(self, remote: str) -> paramiko.SFTPAttributes | None:
        """The file's attributes, or None when it does not exist."""
        try:
            return self.sftp.stat(remote)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return None
            raise ClusterUnreachable(f"stat {remote} failed: {exc}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise ClusterUnreachable(f"stat {remote} failed: {exc}") from exc

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o640) -> None:
        """Write a file atomically (temporary name, then rename): a reader never sees half."""
        tmp = f"{remote}.part"
        try:
            with self.sftp.open(tmp, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
            self.sftp.chmod(tmp, mode)
            self.sftp.posix_rename(tmp, remote)
        except _TRANSPORT_ERRORS as exc:
            raise ClusterUnreachable(f"upload to {remote} failed: {exc}") from exc

    def put_file(self, local: Path, remote: str) -> None:
        tmp = f"{remote}.part"
        try:
            self.sftp.put(str(local), tmp, confirm=True)
            self.sftp.chmod(tmp, 0o640)
            self.sftp.posix_rename(tmp, remote)
        except _TRANSPORT_ERRORS as exc:
            raise ClusterUnreachable(f"upload of {local.name} to {remote} failed: {exc}") from exc

    def put_tree(self, local_dir: Path, remote_dir: str, *, skip=("__pycache__",)) -> int:
        """Copy a local folder's files (recursively) into remote_dir; returns the file count."""
        count = 0
        self.makedirs(remote_dir)
        for root, dirs, files in os.walk(local_dir):
            dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
            rel = Path(root).relative_to(local_dir)
            target = str(PurePosixPath(remote_dir, *rel.parts))
            self.makedirs(target)
            for name in sorted(files):
                if name.endswith(".pyc"):
                    continue
                self.put_file(Path(root) / name, f"{target}/{name}")
                count += 1
        return count

    def read_from(self, remote: str, offset: int, max_bytes: int) -> tuple[bytes, int] | None:
        """Up to max_bytes of a file from offset, and the file's size; None if it is missing."""
        try:
            with self.sftp.open(remote, "rb") as fh:
                size = fh.stat().st_size
                if offset >= size:
                    return b"", size
                fh.seek(offset)
                want = min(max_bytes, size - offset)
                fh.prefetch(want)
                return fh.read(want), size
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return None
            raise ClusterUnreachable(f"reading {remote} failed: {exc}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise ClusterUnreachable(f"reading {remote} failed: {exc}") from exc

    def get_file(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.sftp.get(remote, str(local))
        except _TRANSPORT_ERRORS as exc:
            raise ClusterUnreachable(f"download of {remote} failed: {exc}") from exc

    def get_tree(self, remote_dir: str, local_dir: Path) -> int:
        """Copy a remote folder (recursively) into local_dir; returns the file count."""
        count = 0
        local_dir.mkdir(parents=True, exist_ok=True)
        try:
            entries = self.sftp.listdir_attr(remote_dir)
        except _TRANSPORT_ERRORS as exc:
            raise ClusterUnreachable(f"listing {remote_dir} failed: {exc}") from exc
        for entry in entries:
            name = entry.filename
            if name in (".", "..") or "/" in name:
                continue
            if stat.S_ISDIR(entry.st_mode or 0):
                count += self.get_tree(f"{remote_dir}/{name}", local_dir / name)
            elif stat.S_ISREG(entry.st_mode or 0):
                self.get_file(f"{remote_dir}/{name}", local_dir / name)
                count += 1
        return count

    def close(self) -> None:
        try:
            if self._sftp is not None:
                self._sftp.close()
        finally:
            self._client.close()


@contextmanager
def ssh_session(target: SshTarget) -> Iterator[SshSession]:
    """One connection for one backend operation, always closed."""
    session = SshSession(target)
    try:
        yield session
    finally:
        session.close()
