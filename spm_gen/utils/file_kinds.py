"""What kind of file a path is, before anything opens it: reading a named pipe or a device blocks or never ends,
so a folder's files are opened only when they are regular files (light: no heavy import)."""

from __future__ import annotations

import os
import stat

_KINDS = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def special_kind(path: str) -> str | None:
    """None when `path` is a regular file (links followed) or does not exist; else what it is instead."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a regular file")
