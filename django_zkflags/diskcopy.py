"""The last-known snapshot on disk, served by a process that starts while ZooKeeper is
away.

Format: one header line ``zkflags-snapshot-file 1 <mzxid>`` then the snapshot znode's bytes.
A file is written atomically (temp file, fsync, rename) and loaded only if this process's
user owns it and nobody else can write it or its directory: another local user must not be
able to choose the flags a process serves.

The attack this answers: another local user puts a file at the path before the app starts
(or while ZooKeeper is down), hoping it is served. Refused are a file (or a symbolic link)
owned by another user, a symbolic link of ours too (it could lead to another site's
snapshot), a file with a second hard link (where ``fs.protected_hardlinks`` is off another
user can link to a file of ours), a file others can write, and any file in a directory
others can write unless it is sticky. The default location (``ZKFLAGS["SNAPSHOT_FILE"]`` =
"default", see :func:`django_zkflags.conf.snapshot_file_path`) is stricter: its directory
must be this user's own, mode 0700 when created here, never a symbolic link -- a directory
another user made in the shared temp dir under that name is refused, and nothing is
written to it.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable

log = logging.getLogger("django_zkflags")

HEADER = b"zkflags-snapshot-file 1 "


class UntrustedFile(ValueError):
    """The file (or its directory) could have been written by another user."""


def _check_trusted(path: str, own_directory: bool = False) -> None:
    """The file must be a regular file with one link, ours and writable by nobody else; its
    directory as :func:`_check_directory` wants it."""
    uid = os.geteuid()
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedFile(f"it is a symbolic link (owned by uid {info.st_uid})")
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedFile("it is not a regular file")
    if info.st_uid != uid:
        raise UntrustedFile(f"it is owned by uid {info.st_uid}, not by this process ({uid})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedFile("other users can write it")
    if info.st_nlink != 1:
        raise UntrustedFile(f"it has {info.st_nlink} hard links (another name can change it)")
    _check_directory(os.path.dirname(os.path.abspath(path)), own_directory)


def _check_directory(directory: str, own: bool) -> None:
    """With ``own``: this user's directory (not a symbolic link) that nobody else can write.
    Otherwise ours and private, or sticky (like /tmp: others cannot replace a file they do
    not own there)."""
    uid = os.geteuid()
    info = os.lstat(directory) if own else os.stat(directory)
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if own:
        if not stat.S_ISDIR(info.st_mode):
            raise UntrustedFile(f"{directory} is not a directory (a symbolic link?)")
        if info.st_uid != uid:
            raise UntrustedFile(
                f"its directory {directory} is owned by uid {info.st_uid}, "
                f"not by this process ({uid})"
            )
        if others_write:
            raise UntrustedFile(f"other users can write its directory {directory}")
    elif (info.st_uid != uid or others_write) and not info.st_mode & stat.S_ISVTX:
        raise UntrustedFile("other users can replace it (its directory is not private)")


def ensure_private_dir(directory: str, own: bool = False) -> None:
    """Create ``directory`` (mode 0700) if needed; raise :class:`UntrustedFile` if a file
    there could be replaced by another user (see :func:`_check_directory`)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _check_directory(directory, own)


class SnapshotFile:
    """``own_directory``: the directory must be this user's own (the default location)."""

    def __init__(self, path: str, own_directory: bool = False) -> None:
        self.path = path
        self.own_directory = own_directory

    def save(self, data: bytes, zxid: int) -> None:
        """Write atomically: readers see the old file or the new one. Never raises."""
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            ensure_private_dir(directory, self.own_directory)
            fd, tmp = tempfile.mkstemp(prefix=".zkflags-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(HEADER + str(zxid).encode() + b"\n" + data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except (OSError, UntrustedFile) as exc:
            log.warning("Could not write the snapshot file %s: %s", self.path, exc)

    def load(self, max_bytes: int | None = None) -> tuple[bytes, int] | None:
        """The snapshot bytes and their mzxid, or None when there is no usable file (the
        reason is logged). A file whose snapshot is over ``max_bytes`` is not read whole
        (the caller also bounds what the bytes inflate to)."""
        if not os.path.exists(self.path):
            return None
        try:
            _check_trusted(self.path, self.own_directory)
            with open(self.path, "rb") as fh:
                # The header line (HEADER, a zxid of at most 20 digits, "\n"), the snapshot.
                limit = -1 if max_bytes is None else len(HEADER) + 21 + max_bytes
                raw = fh.read(limit)
                if limit >= 0 and fh.read(1):
                    raise ValueError(f"it holds a snapshot larger than {max_bytes} bytes")
            header, _, data = raw.partition(b"\n")
            if not header.startswith(HEADER):
                raise ValueError("not a zkflags snapshot file")
            return data, int(header[len(HEADER) :])
        except (OSError, ValueError) as exc:
            log.warning("Ignoring the snapshot file %s: %s", self.path, exc)
            return None


class BackgroundSaver:
    """Save the latest snapshot handed over, on a thread of its own: the watch thread never
    waits on the disk (a 100,000-flag view is 1.2 MB and an fsync), and a burst of changes
    costs one write of the last of them."""

    def __init__(self, snapshot_file: SnapshotFile) -> None:
        self.file = snapshot_file
        self.saves = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: tuple[Callable[[], bytes], int] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, build: Callable[[], bytes], zxid: int) -> None:
        """Save what ``build()`` returns (called on the saver's thread), unless a newer
        snapshot is submitted before it is written."""
        with self._lock:
            self._pending = (build, zxid)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="zkflags-disk-copy", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def flush(self, timeout: float) -> None:
        """Write what is pending and stop, waiting at most ``timeout`` seconds."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                build, zxid = pending
                try:
                    self.file.save(build(), zxid)
                except Exception:  # never let the thread die on one bad snapshot
                    log.exception("Could not write the snapshot file %s", self.file.path)
                self.saves += 1
            if self._stopping and self._pending is None:
                return
