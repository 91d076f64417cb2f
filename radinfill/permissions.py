"""File modes: directories created with a fixed mode whatever the umask, and the check that a
file the service trusts (a model release) can be changed by nobody but its owner.

Trust rule of :func:`untrusted`: the file must be owned by the running user or by root, never
writable by others (``o+w``), and writable by its group only when that group is the owner's
*private* group (same name as the owner, the owner's primary group, no other members). The
private-group exception exists because distributions with user private groups set umask 002 for
their users, so a git checkout or a ``cp`` there leaves ``g+w`` files that no other account can
write; a shared group (``staff``, ``users``) can, and is refused. A service account created by
``systemd-sysusers`` (systemd/radinfill.sysusers) has such a private group.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

__all__ = ["DIRECTORY_MODE", "PRIVATE_DIRECTORY_MODE", "make_dirs", "untrusted"]

#: Mode of directories others read (the output tree, the model registry): rwxr-xr-x.
DIRECTORY_MODE = 0o755
#: Mode of the service's own directories (state, quarantine): rwxr-x---.
PRIVATE_DIRECTORY_MODE = 0o750


def make_dirs(path: str | os.PathLike[str], mode: int = DIRECTORY_MODE) -> Path:
    """Create ``path`` and its missing parents with exactly ``mode`` (like ``mkdir -p -m``).

    ``mkdir(2)`` masks the mode with the process umask, so a service started under umask 000
    would create world-writable directories; each directory created here is chmod-ed to
    ``mode`` right after, and is never more permissive than ``mode`` in between. Directories
    that exist are left as they are (their mode is the operator's choice).

    Raises
    ------
    FileExistsError
        If ``path`` or a parent exists and is not a directory.
    """
    target = Path(path)
    missing = []
    for directory in (target, *target.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created meanwhile by someone else: theirs, not ours to chmod
        os.chmod(directory, mode)
    return target


def untrusted(st: os.stat_result) -> str | None:
    """Why a file with status ``st`` may have been changed by someone else; None if it cannot.

    See the module docstring for the rule. The answer names the owner or the mode, so that an
    error message built from it tells the operator what to fix (``chown``, ``chmod go-w``).
    """
    mode = stat.S_IMODE(st.st_mode)
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        return f"owned by uid {st.st_uid}, neither the running user (uid {me}) nor root"
    if mode & stat.S_IWOTH:
        return f"mode {mode:04o} is writable by others"
    if mode & stat.S_IWGRP and not _private_group(st.st_uid, st.st_gid):
        return f"mode {mode:04o} is writable by group {st.st_gid}, not the owner's private group"
    return None


def _private_group(uid: int, gid: int) -> bool:
    """Whether ``gid`` is the user private group of ``uid`` (see the module docstring)."""
    try:
        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:  # an id without a name (a container, a removed account): not private
        return False
    return (
        user.pw_gid == gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
    )
