"""Zips written as a dataset host or a hostile archive would have them (shared by the
preparation tests)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path


def write_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None):
    """``entries`` (member name -> bytes), and ``symlinks`` (member name -> link target) as a
    unix zip tool stores them."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, link_target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr carries the file type
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, link_target)
    return path
