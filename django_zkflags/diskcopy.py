"""The last-known snapshot on disk, served by a process that starts while ZooKeeper is
away.

Format: one header line ``zkflags-snapshot-file 1 <mzxid>`` then the snapshot znode's bytes.
A file is written atomically (temp file, fsync, rename) and loaded only if this process's
user owns it and nobody else can write it or its directory: another local user must not be
able to choose the flags a process serves.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile

log = logging.getLogger("django_zkflags")

HEADER = b"zkflags-snapshot-file 1 "


class UntrustedFile(ValueError):
    """The file (or its directory) could have been written by another user."""


def _check_trusted(path: str) -> None:
    """The file must be ours and writable by nobody else; its directory ours and private,
    or sticky (like /tmp: others cannot replace a file they do not own there)."""
    uid = os.geteuid()
    info = os.stat(path)
    if info.st_uid != uid:
        raise UntrustedFile(f"it is owned by uid {info.st_uid}, not by this process ({uid})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedFile("other users can write it")
    directory = os.stat(os.path.dirname(os.path.abspath(path)))
    shared = directory.st_uid != uid or directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if shared and not directory.st_mode & stat.S_ISVTX:
        raise UntrustedFile("other users can replace it (its directory is not private)")


def ensure_private_dir(directory: str) -> None:
    """Create ``directory`` (mode 0700) if needed."""
    os.makedirs(directory, mode=0o700, exist_ok=True)


class SnapshotFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def save(self, data: bytes, zxid: int) -> None:
        """Write atomically: readers see the old file or the new one. Never raises."""
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            ensure_private_dir(directory)
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
        except OSError as exc:
            log.warning("Could not write the snapshot file %s: %s", self.path, exc)

    def load(self, max_bytes: int | None = None) -> tuple[bytes, int] | None:
        """The snapshot bytes and their mzxid, or None when there is no usable file (the
        reason is logged). A file whose snapshot is over ``max_bytes`` is not read whole
        (the caller also bounds what the bytes inflate to)."""
        if not os.path.exists(self.path):
            return None
        try:
            _check_trusted(self.path)
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
