"""Files written whole or not at all, and read only when they are regular files.

:func:`replace_atomically` writes into a temporary file beside the target, fsyncs it and renames it over the target,
so a reader (or a writer killed at any moment) sees the old file or the new one, never half of one. The temporary
file is named ``.<name>.linclass-tmp-<pid>-<token>``: the user can tell what it is, and the next write to the same
path removes those whose writing process is gone (a SIGKILL runs no cleanup). The new file keeps the mode of the file
it replaces (a new one gets the umask's), and a symbolic link is written through: its target gets the new content and
the link stays.

:func:`open_regular_file` refuses what is not a regular file before reading a byte: a FIFO would block the reader
forever, a character device never ends, a directory is no file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMPORARY_MARK = ".linclass-tmp-"


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symbolic links followed).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        ``path`` is a directory, FIFO, socket or device; the message names it and what it is.
    """
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer before the check below could run.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is {_describe_file_type(mode)}, not a regular file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _describe_file_type(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


@contextlib.contextmanager
def replace_atomically(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write that replaces ``path`` (or the file a link at ``path`` points to) when the block ends.

    On leaving the block normally the file is flushed, fsynced and renamed over the target, and the directory is
    fsynced; if the block raises, the temporary file is removed and the target is left as it was.

    Raises
    ------
    FileNotFoundError
        The directory the file would go in does not exist; the message names it.
    """
    requested = Path(path)
    target = Path(os.path.realpath(requested))
    directory = target.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {requested}: directory {directory} does not exist")
    remove_stale_temporaries(target)
    try:
        kept_mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        kept_mode = None  # a new file: os.open's 0o666 less the umask
    temporary = directory / f".{target.name}{TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        if kept_mode is not None:
            os.fchmod(descriptor, kept_mode)
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files of writes to ``target`` whose process no longer runs; return what was removed."""
    prefix = f".{target.name}{TEMPORARY_MARK}"
    removed = []
    with os.scandir(target.parent) as entries:
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _process_runs(int(pid)):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; where directories cannot be opened or fsynced (not POSIX) there is nothing
    more to do."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
