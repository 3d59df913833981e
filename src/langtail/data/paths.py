"""Image paths that cannot escape their data root, and input errors that list every bad line.

Shared by every file-backed dataset and the manifest's image store: :class:`PathChecker`
(image paths stay inside their data root and exist; nothing outside is listed or opened),
:class:`BadLine` / :class:`BadLinesError` / :func:`raise_bad_lines` (every bad input line in
one error, ``file:line: text: reason``), :func:`check_refs`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class BadLine:
    """One rejected input line: ``file:line: text: reason`` (``line`` 0 = no line number)."""

    file: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.text}: {self.reason}"


#: at most this many bad lines are spelled out in one error message (the count is always exact)
MAX_LISTED_BAD_LINES = 1000


class BadLinesError(ValueError):
    """Every bad line of a dataset's input files, reported in one error."""

    headline = "{n} bad line(s) in the input files"

    def __init__(self, dataset: str, bad: Sequence[BadLine], hint: str = "", total: int = 0):
        self.bad = list(bad)
        listed = "\n  ".join(str(b) for b in self.bad[:MAX_LISTED_BAD_LINES])
        more = len(self.bad) - MAX_LISTED_BAD_LINES
        tail = f"\n  ... and {more} more bad line(s)" if more > 0 else ""
        head = self.headline.format(n=len(self.bad), total=total)
        super().__init__(f"{dataset}: {head} (file:line: text: reason):\n  {listed}{tail}\n{hint}".rstrip())


class MissingImagesError(BadLinesError, FileNotFoundError):
    """Only missing image files (a :class:`BadLinesError` that is also a ``FileNotFoundError``)."""

    headline = "{n} of {total} image files are missing"


def raise_bad_lines(dataset: str, bad: Sequence[BadLine], hint: str = "", total: int = 0) -> None:
    """Raise :class:`MissingImagesError` if every problem is a missing file (``total``: the
    number of image references checked), else :class:`BadLinesError`; nothing if ``bad`` is empty."""
    if not bad:
        return
    if all(b.reason.startswith(MISSING) for b in bad):
        raise MissingImagesError(dataset, bad, hint, total or len(bad))
    raise BadLinesError(dataset, bad, hint, total)


MISSING = "file not found"
OUTSIDE = "outside the data root"


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class PathChecker:
    """Checks image references against a data root without opening any file.

    A reference is a path relative to ``root`` (POSIX or native separators). It is
    rejected when it is absolute, when ``..`` components lead out of ``root``, or, unless
    ``allow_symlinks_outside`` is set, when it resolves (``os.path.realpath``: symlinked
    folders or files) to a place outside ``realpath(root)``. Existence is checked by
    listing each parent folder once (no ``stat`` per file), and only for references that
    stay inside the root. Nothing outside the root is ever listed or opened.
    """

    def __init__(self, root: str | Path, allow_symlinks_outside: bool = False):
        self.root = os.path.abspath(os.fspath(root))
        self.real_root = os.path.realpath(self.root)
        self.allow = allow_symlinks_outside
        self._dirs: dict[str, tuple[str, dict[str, bool] | None]] = {}  # parent -> (realpath, {name: is_link})
        self._real: dict[str, str] = {}  # parent -> realpath (for escape())

    def _dir(self, parent: str) -> tuple[str, dict[str, bool] | None]:
        got = self._dirs.get(parent)
        if got is None:
            real = parent if self.allow else os.path.realpath(parent)
            entries: dict[str, bool] | None = None
            if self.allow or inside(real, self.real_root):
                try:
                    with os.scandir(parent) as it:
                        entries = {e.name: e.is_symlink() for e in it}
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    entries = {}
            got = (real, entries)
            self._dirs[parent] = got
        return got

    def problem(self, ref: str) -> str | None:
        """Why ``ref`` cannot be used (a reason string starting with :data:`MISSING` or naming
        the escape), or None if it is a file inside the root."""
        if not ref or os.path.isabs(ref) or ref.startswith("~"):
            return f"absolute path: image paths must be relative to the data root {self.root}"
        full = os.path.normpath(os.path.join(self.root, ref))
        if not inside(full, self.root):
            return f"'..' leads {OUTSIDE} {self.root}"
        parent, name = os.path.split(full)
        real_parent, entries = self._dir(parent)
        if entries is None:
            return (f"folder resolves to {real_parent}, {OUTSIDE} {self.real_root} (a symlink; set "
                    "data.allow_symlinks_outside_root: true if your layout needs it)")
        if name not in entries:
            return f"{MISSING}: {full}"
        if entries[name] and not self.allow:
            target = os.path.realpath(full)
            if not inside(target, self.real_root):
                return (f"symlink to {target}, {OUTSIDE} {self.real_root} (set "
                        "data.allow_symlinks_outside_root: true if your layout needs it)")
            if not os.path.exists(target):
                return f"{MISSING}: {full} (broken symlink)"
        return None

    def escape(self, ref: str) -> str | None:
        """Why ``ref`` leaves the root, or None; no folder listing (one ``lstat`` of the file,
        one ``realpath`` per parent folder, cached): the check before each image read."""
        if not ref or os.path.isabs(ref) or ref.startswith("~"):
            return f"absolute path: image paths must be relative to the data root {self.root}"
        full = os.path.normpath(os.path.join(self.root, ref))
        if not inside(full, self.root):
            return f"'..' leads {OUTSIDE} {self.root}"
        if self.allow:
            return None
        parent = os.path.dirname(full)
        real_parent = self._real.get(parent)
        if real_parent is None:
            real_parent = self._real[parent] = os.path.realpath(parent)
        if not inside(real_parent, self.real_root):
            return f"folder resolves to {real_parent}, {OUTSIDE} {self.real_root}"
        if os.path.islink(full):
            target = os.path.realpath(full)
            if not inside(target, self.real_root):
                return f"symlink to {target}, {OUTSIDE} {self.real_root}"
        return None

    def check(self, refs: Sequence[str]) -> list[tuple[int, str]]:
        """``[(index, reason)]`` for every bad reference (see :meth:`problem`)."""
        out = []
        for i, r in enumerate(refs):
            why = self.problem(r)
            if why is not None:
                out.append((i, why))
        return out


def check_refs(dataset: str, root: Path, refs: Sequence[str], sources: Sequence[tuple[str, int, str]] | None = None,
               allow_symlinks_outside: bool = False, hint: str = "") -> None:
    """Raise one error listing every ref that is missing or leaves ``root``.

    ``sources[i] = (file, line, text)`` says where ``refs[i]`` came from (split file and
    line); without it the ref itself is reported (``file`` = ``root``).
    """
    bad = []
    for i, why in PathChecker(root, allow_symlinks_outside).check(refs):
        f, ln, text = sources[i] if sources is not None else (str(root), 0, refs[i])
        bad.append(BadLine(f, ln, text, why))
    raise_bad_lines(dataset, bad, hint, len(refs))
