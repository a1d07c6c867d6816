"""Output folders that never destroy data: a marker, refusals, an atomic swap, stale clean-up.

Every folder that ``deadnet`` writes (``--out`` of classify, dataset, simulate, heatmap,
report, gradcam, classmodel, evaluate, demo and bench, and train's ``--run``) carries a marker
file, :data:`MARKER` (``.deadnet-output.json``), naming the command that made it. The rules:

- a new ``--out`` is built in a hidden sibling ``.NAME.partial-PID-XXXX`` and renamed to
  ``NAME`` only when the command succeeded: an interrupted run leaves no folder that looks
  complete;
- an existing ``--out`` is replaced (atomically, by exchanging it with the finished sibling)
  only when it is empty, or when its marker says the *same command* made it and it holds no
  file that the command did not write. Rerunning a command into its own earlier output is
  the normal way to redo it, so this needs no ``--force``; anything else is refused;
- refused, with one sentence and exit status 2, before any work starts: an ``--out`` that
  is a file, a symbolic link, the current folder or one of its parents, a folder of files
  that deadnet did not write (or that another command wrote), a path under a regular file,
  a location that cannot be written (probed by creating the sibling), and an ``--out``
  equal to, inside, or containing any input of the command;
- leftovers of killed runs (``.NAME.partial-*`` and ``.NAME.old-*`` siblings that hold a
  marker whose process is gone) are removed on the next run; when a run was killed between
  the two renames of a non-atomic swap, the previous output is put back first. Siblings
  without a marker (for instance the ``.NAME.old.PID`` that earlier versions left) are
  never touched.

Worker processes of the toolkit (multiprocessing pools, the caffe tool, probe children) call
:func:`die_with_parent` so that they end when the command is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from data_prep.core.errors import UserError

MARKER = ".deadnet-output.json"
#: Files that readers of an output add to it and that are no user data: an LMDB's lock file
#: (Caffe creates it when it reads a data set that was written without one).
_READER_FILES = frozenset({"lock.mdb"})
_STALE_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_PR_SET_PDEATHSIG = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``).

    For the initializer of a multiprocessing pool or the ``preexec_fn`` of a subprocess.
    Elsewhere than Linux it does nothing.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def read_marker(folder: Path) -> dict | None:
    """The marker document of ``folder``, or None when there is none (or it is unreadable)."""
    try:
        doc = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("tool") != "deadnet-caffe":
        return None
    return doc


def write_marker(folder: Path, command: str, state: str, files: list[str] | None = None) -> None:
    """Write the marker of ``folder``: the command that made it, its state and process."""
    doc = {
        "tool": "deadnet-caffe",
        "command": command,
        "state": state,
        "pid": os.getpid(),
        "pid_start": _start_time(os.getpid()),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if files is not None:
        doc["files"] = files
    (folder / MARKER).write_text(json.dumps(doc, indent=1) + "\n")


def _files(folder: Path) -> list[str]:
    """Relative paths of every file and link under ``folder`` except the marker, sorted."""
    out = []
    for root, _dirs, names in os.walk(folder):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), folder)
            if rel != MARKER:
                out.append(rel)
    return sorted(out)


def _owner_alive(doc: dict) -> bool:
    pid, start = doc.get("pid"), doc.get("pid_start")
    return isinstance(pid, int) and start is not None and _start_time(pid) == start


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies under it (both resolved)."""
    return a == b or b in a.parents


def _real(path: Path) -> Path:
    """``path`` made absolute with its parent's symbolic links resolved (not the last part)."""
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def check_location(
    out: Path | str, command: str, inputs: Iterable[Path | str] = (), option: str = "--out"
) -> Path:
    """Refuse ``out`` as an output folder of ``command`` unless it is safe (module docstring).

    Returns the resolved path. Nothing is created or changed.

    Raises
    ------
    UserError
        One sentence naming ``option``, the path and the reason.
    """
    given = Path(out)
    real = _real(given)
    here = Path.cwd().resolve()
    if given.name in ("", ".", "..") or _inside(here, real):
        raise UserError(
            f"{option} {given} is the current folder or one of its parents; "
            "give a new folder to write into."
        )
    for item in inputs:
        src = Path(os.path.realpath(item))
        if _inside(real, src) or _inside(src, real):
            how = "is" if real == src else ("lies inside" if _inside(real, src) else "contains")
            raise UserError(
                f"{option} {given} {how} the input {item}; write the output somewhere else."
            )
    for parent in real.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UserError(f"{option} {given}: {parent} is a file, not a folder.")
            break
    if real.is_symlink():
        raise UserError(f"{option} {given} is a symbolic link; give the folder itself.")
    if real.exists() and not real.is_dir():
        raise UserError(
            f"{option} {given} is a file, not a folder; remove it or choose another {option}."
        )
    try:
        occupied = real.is_dir() and any(real.iterdir())
    except OSError as err:
        raise UserError(f"{option} {given}: cannot read it ({err.strerror}).") from None
    if occupied:
        doc = read_marker(real)
        if doc is None:
            raise UserError(
                f"{option} {given} already holds files that deadnet did not write; "
                f"choose a new {option} (nothing was changed)."
            )
        if doc.get("command") != command:
            raise UserError(
                f"{option} {given} holds the output of 'deadnet {doc.get('command')}', not of "
                f"'deadnet {command}'; choose another {option} (nothing was changed)."
            )
        if "files" in doc:
            added = set(_files(real)) - set(doc["files"])
            extra = sorted(f for f in added if Path(f).name not in _READER_FILES)
            if extra:
                raise UserError(
                    f"{option} {given} holds {len(extra)} file(s) that deadnet {command} did "
                    f"not write (e.g. {extra[0]}); move them or choose another {option}."
                )
    return real


def clean_stale(final: Path) -> None:
    """Remove leftovers of killed runs beside ``final`` (ours by name and marker only).

    When ``final`` is missing but a finished earlier output was moved aside (``.old-``) by a
    run killed halfway through its swap, that output is renamed back to ``final`` first.
    """
    final = _real(final)
    if not final.parent.is_dir():
        return
    for p in sorted(final.parent.iterdir()):
        m = _STALE_RE.match(p.name)
        if not m or m["name"] != final.name or p.is_symlink() or not p.is_dir():
            continue
        doc = read_marker(p)
        if doc is None or _owner_alive(doc):
            continue
        if m["kind"] == "old" and not final.exists() and doc.get("state") == "complete":
            p.rename(final)
            continue
        shutil.rmtree(p, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _sibling(final: Path, kind: str) -> Path:
    return final.with_name(f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _make_parents(folder: Path, option: str, given: Path) -> list[Path]:
    """Create the missing parents of ``folder``; return those created, deepest first."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    for d in reversed(made):
        try:
            d.mkdir()
        except OSError as err:
            for m in made[made.index(d) + 1 :]:
                with contextlib.suppress(OSError):
                    m.rmdir()
            raise UserError(f"{option} {given}: cannot create {d} ({err.strerror}).") from None
    return made


def _remove_empty(made: list[Path]) -> None:
    for d in made:
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def output_dir(
    out: Path | str,
    command: str,
    inputs: Iterable[Path | str] = (),
    option: str = "--out",
    listed: bool = True,
) -> Iterator[Path]:
    """Check ``out``, then yield a new hidden sibling to write into; on success it replaces
    ``out`` in one step and carries the marker; on any error or interrupt it is removed and
    ``out`` stays exactly as it was.

    Enter it before the work starts: entering is the writability probe (module docstring).
    With ``listed`` the marker lists the files written, and a later run refuses to replace
    the folder if other files were added; a folder that grows later (a training run) is
    made with ``listed=False``.

    Raises
    ------
    UserError
        ``out`` is not a safe output location of ``command`` (see :func:`check_location`).
    """
    given = Path(out)
    inputs = list(inputs)
    final = check_location(given, command, inputs, option)
    made = _make_parents(final.parent, option, given)
    clean_stale(final)
    final = check_location(given, command, inputs, option)  # a restored earlier output
    if final.exists() and not os.access(final, os.W_OK):
        raise UserError(f"{option} {given} is not writable; choose another {option}.")
    tmp = _sibling(final, "partial")
    try:
        tmp.mkdir()
        write_marker(tmp, command, "partial")
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise UserError(
            f"{option} {given}: cannot write in {final.parent} ({err.strerror}); "
            f"choose another {option}."
        ) from None
    try:
        yield tmp
        write_marker(tmp, command, "complete", _files(tmp) if listed else None)
        _commit(tmp, final, command, inputs, option, given)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise


def _commit(tmp: Path, final: Path, command: str, inputs, option: str, given: Path) -> None:
    """Put the finished ``tmp`` in place of ``final`` (checked again: hours may have passed)."""
    check_location(given, command, inputs, option)
    if not final.exists():
        tmp.rename(final)
        return
    if _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous output
        return
    old = _sibling(final, "old")
    final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def claim_dir(
    folder: Path | str, command: str, inputs: Iterable[Path | str] = (), option: str = "--out"
) -> Path:
    """Make ``folder`` (a folder that grows over several runs: a demo folder) ``command``'s.

    A missing or empty folder is created with the marker; one that already carries the
    marker of ``command`` is returned as it is; anything else is refused as in
    :func:`check_location`. Returns the resolved folder.
    """
    given = Path(folder)
    real = check_location(given, command, inputs, option)
    if read_marker(real) is not None:
        return real
    _make_parents(real, option, given)
    try:
        write_marker(real, command, "claimed")
    except OSError as err:
        raise UserError(
            f"{option} {given}: cannot write in it ({err.strerror}); choose another {option}."
        ) from None
    return real
