"""What tarka-jax can prove it wrote in a folder: the marker, its claims, and what they cover.

Every writer that replaces or deletes files in a folder the user named (the converters and
other model writers, ``embed-corpus``, ``mteb``, ``cache-teacher``) asks this module first.
The rule (docs/safety.md, "Ownership you can prove"):

* a folder we wrote carries a marker, :data:`MARKER` (JSON, format :data:`FORMAT` version
  :data:`VERSION`), holding *claims*: for each file we wrote, its relative path, size and
  sha256 (and, where the writer recorded it, the inode / mtime / ctime it had);
* a file on disk is **ours** when it is a regular file (not a symlink) whose path is claimed,
  with the claimed size, and either the recorded stat identity (same inode, same mtime and
  ctime in nanoseconds: not touched since) or the claimed sha256. A marker copied into a
  user's folder therefore proves nothing about a hand-edited file there;
* a temporary (:func:`tmp_name`: ``.NAME.tarka-tmp-RUNID``) is ours when RUNID is one of the
  marker's ``runs``;
* the marker is validated before any of it is believed: schema, format version, every path
  relative, ``/``-separated, without ``..``, inside the folder. A malformed marker is an error
  naming why (``{"files": "ab"}`` is not a list of the names ``a`` and ``b``).

Nothing here deletes anything the walk did not prove ours a moment before: :func:`survey`
records each owned file's stat, and :func:`remove_owned` deletes a file only while its stat
is still that one (a file saved into the folder meanwhile, or rewritten, is kept).

Bottom layer: imports nothing of tarka_jax but :mod:`tarka_jax.errors`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat as stat_module
import uuid

from tarka_jax.errors import TarkaError

MARKER = ".tarka-jax-output.json"
LOCK = ".tarka-jax-lock"  # the job lock (tarka_jax.files.joblock); never opened here
FORMAT = "tarka-jax-output"
VERSION = 2
MAX_MARKER_BYTES = 64 << 20  # a marker larger than this is not one we wrote
_TMP = re.compile(r"^\.(?P<final>.+)\.tarka-tmp-(?P<run>[0-9a-f]{32})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class UnsafeOutputError(TarkaError):
    """An output we refuse to write, replace or delete (the message names the file and why)."""


def new_run_id() -> str:
    """A fresh run id: 32 hex digits, carried by every temporary the run writes."""
    return uuid.uuid4().hex


def tmp_name(final: str, run_id: str) -> str:
    """The hidden temporary a run writes before renaming it to ``final`` (a base name)."""
    return f".{final}.tarka-tmp-{run_id}"


def parse_tmp(name: str) -> tuple[str, str] | None:
    """``(final name, run id)`` of a :func:`tmp_name`, else None."""
    m = _TMP.match(name)
    return (m["final"], m["run"]) if m else None


@dataclasses.dataclass(frozen=True)
class Claim:
    """A file we wrote: size, sha256, and (optional) the stat identity it had then."""

    size: int
    sha256: str
    ident: tuple[int, int, int] | None = None  # (st_ino, st_mtime_ns, st_ctime_ns)

    def to_json(self) -> dict:
        out = {"size": self.size, "sha256": self.sha256}
        if self.ident is not None:
            out["ident"] = list(self.ident)
        return out


def ident_of(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def claim_file(path: str) -> Claim:
    """Claim a regular file we just wrote (hashing it)."""
    before = os.lstat(path)
    digest = sha256_file(path)
    after = os.lstat(path)
    if ident_of(before) != ident_of(after) or not stat_module.S_ISREG(after.st_mode):
        raise UnsafeOutputError(f"{path} changed while tarka-jax was recording it")
    return Claim(after.st_size, digest, ident_of(after))


@dataclasses.dataclass
class Marker:
    """A validated marker: what kind of output, which runs wrote it, and its claims."""

    kind: str
    runs: list[str]
    files: dict[str, Claim]
    folders: list[str]
    #: more claims per path, not written to the marker (e.g. receipts made before a rename)
    alternatives: dict[str, list[Claim]] = dataclasses.field(default_factory=dict)

    def claims(self, rel: str) -> list[Claim]:
        first = [self.files[rel]] if rel in self.files else []
        return first + self.alternatives.get(rel, [])

    def to_json(self) -> dict:
        out = {"format": FORMAT, "version": VERSION, "kind": self.kind, "runs": self.runs,
               "files": {k: c.to_json() for k, c in sorted(self.files.items())},
               "folders": sorted(self.folders)}
        if self.alternatives:
            out["alternatives"] = {k: [c.to_json() for c in v]
                                   for k, v in sorted(self.alternatives.items()) if v}
        return out


def check_relpath(rel, where: str) -> str:
    """A claimed path: relative, '/'-separated, no '.', '..' or empty parts, not reserved."""
    if not isinstance(rel, str) or not rel or len(rel) > 4096:
        raise UnsafeOutputError(f"{where}: {rel!r} is not a relative path")
    parts = rel.split("/")
    if (rel.startswith("/") or "\\" in rel or "\x00" in rel
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafeOutputError(f"{where}: {rel!r} is not a plain relative path inside the "
                                "folder (no absolute path, '..', '.', '\\' or empty part)")
    if rel in (MARKER, LOCK):
        raise UnsafeOutputError(f"{where}: claims the reserved name {rel!r}")
    return rel


def parse_claim(value, where: str) -> Claim:
    if not isinstance(value, dict):
        raise UnsafeOutputError(f"{where} is not an object with size and sha256")
    size, digest, ident = value.get("size"), value.get("sha256"), value.get("ident")
    if type(size) is not int or size < 0:
        raise UnsafeOutputError(f"{where}: size {size!r} is not a non-negative integer")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise UnsafeOutputError(f"{where}: sha256 {digest!r} is not 64 hex digits")
    if ident is not None:
        if (not isinstance(ident, list) or len(ident) != 3
                or any(type(x) is not int for x in ident)):
            raise UnsafeOutputError(f"{where}: ident {ident!r} is not three integers")
        ident = tuple(ident)
    return Claim(size, digest, ident)


def parse_marker(data, source: str) -> Marker:
    """Validate a marker's JSON value; raises :class:`UnsafeOutputError` naming the fault."""
    if not isinstance(data, dict):
        raise UnsafeOutputError(f"{source} is not a JSON object")
    if data.get("format") != FORMAT:
        raise UnsafeOutputError(f"{source}: format is {data.get('format')!r}, not {FORMAT!r}")
    if data.get("version") != VERSION:
        raise UnsafeOutputError(
            f"{source}: marker version {data.get('version', 1)!r} (this tarka-jax reads "
            f"{VERSION}; older markers record no sizes or hashes, so nothing can be proven)")
    kind, runs = data.get("kind"), data.get("runs", [])
    files, folders = data.get("files"), data.get("folders", [])
    if not isinstance(kind, str):
        raise UnsafeOutputError(f"{source}: kind {kind!r} is not a string")
    if not isinstance(runs, list) or not all(isinstance(r, str) and re.fullmatch(
            "[0-9a-f]{32}", r) for r in runs):
        raise UnsafeOutputError(f"{source}: runs must be a list of 32-hex-digit run ids")
    if not isinstance(files, dict):
        raise UnsafeOutputError(f"{source}: files must be an object of path -> claim, got "
                                f"{type(files).__name__} {str(files)[:40]!r}")
    if not isinstance(folders, list):
        raise UnsafeOutputError(f"{source}: folders must be a list of paths")
    claims = {check_relpath(rel, source): parse_claim(v, f"{source}: files[{rel!r}]")
              for rel, v in files.items()}
    more = data.get("alternatives", {})
    if not isinstance(more, dict) or not all(isinstance(v, list) for v in more.values()):
        raise UnsafeOutputError(f"{source}: alternatives must be an object of path -> [claims]")
    alternatives = {check_relpath(rel, source): [
        parse_claim(c, f"{source}: alternatives[{rel!r}]") for c in v] for rel, v in more.items()}
    return Marker(kind, list(runs), claims, [check_relpath(d, source) for d in folders],
                  alternatives)


def read_marker(folder: str) -> Marker | None:
    """The folder's validated marker; None when it has none. Malformed: an error naming it."""
    path = os.path.join(folder, MARKER)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat_module.S_ISREG(st.st_mode):
        raise UnsafeOutputError(f"{path} is not a regular file: not a marker tarka-jax wrote")
    if st.st_size > MAX_MARKER_BYTES:
        raise UnsafeOutputError(f"{path} is {st.st_size} bytes: not a marker tarka-jax wrote")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UnsafeOutputError(f"{path} is not valid JSON ({e}): not a marker tarka-jax "
                                "wrote") from None
    return parse_marker(data, path)


def claim_folder(folder: str, kind: str, runs=(), skip=()) -> Marker:
    """A marker claiming every regular file and folder now below ``folder`` (none skipped)."""
    files, folders = {}, []
    for rel, entry in walk(folder):
        if rel in skip:
            continue
        if entry.is_dir(follow_symlinks=False):
            folders.append(rel)
        elif entry.is_file(follow_symlinks=False):
            files[rel] = claim_file(entry.path)
        else:
            raise UnsafeOutputError(f"{entry.path}: tarka-jax writes no links or special files")
    return Marker(kind, list(runs), files, folders)


def write_marker(folder: str, marker: Marker) -> None:
    """Write ``marker`` into ``folder`` atomically (a temporary carrying a run id, renamed)."""
    run = marker.runs[-1] if marker.runs else new_run_id()
    tmp = os.path.join(folder, tmp_name(MARKER, run))
    data = (json.dumps(marker.to_json(), indent=1) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)  # one write: a kill leaves it empty or whole
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(folder, MARKER))


def walk(folder: str):
    """``(relative path, DirEntry)`` of everything below ``folder``, never following links."""
    stack = [("", folder)]
    while stack:
        prefix, path = stack.pop()
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            yield rel, entry
            if entry.is_dir(follow_symlinks=False):
                stack.append((rel + "/", entry.path))


@dataclasses.dataclass
class Survey:
    """What a folder holds, by ownership: owned files (with the stat seen), folders, the rest."""

    folder: str
    owned: dict[str, tuple]  # rel -> stat identity when proven
    folders: list[str]
    foreign: list[str]  # entries not proven ours, each with why
    marker: Marker | None

    def refusal(self) -> str | None:
        if not self.foreign:
            return None
        shown = "; ".join(self.foreign[:3])
        more = f"; ... ({len(self.foreign) - 3} more)" if len(self.foreign) > 3 else ""
        return shown + more


def _self_proving(entry, tmp: tuple[str, str]) -> bool:
    """A marker's temporary proves itself: empty (killed before its one write) or a valid
    marker naming the run id its name carries."""
    if tmp[0] != MARKER or not entry.is_file(follow_symlinks=False):
        return False
    st = entry.stat(follow_symlinks=False)
    if st.st_size == 0:
        return True
    if st.st_size > MAX_MARKER_BYTES:
        return False
    try:
        with open(entry.path, "rb") as f:
            return tmp[1] in parse_marker(json.loads(f.read()), entry.path).runs
    except (ValueError, UnsafeOutputError):
        return False


def why_not_ours(folder: str, rel: str, marker: Marker | None) -> str | None:
    """None when ``folder/rel`` is provably ours, else a short reason naming it."""
    return _why_not_ours(rel, _Entry(os.path.join(folder, *rel.split("/"))), marker)


class _Entry:
    """The part of ``os.DirEntry`` :func:`_why_not_ours` uses, for a path."""

    def __init__(self, path: str):
        self.path = path
        self._st = os.lstat(path)

    def stat(self, follow_symlinks: bool = False):
        return self._st

    def is_dir(self, follow_symlinks: bool = False) -> bool:
        return stat_module.S_ISDIR(self._st.st_mode)

    def is_file(self, follow_symlinks: bool = False) -> bool:
        return stat_module.S_ISREG(self._st.st_mode)


def _why_not_ours(rel: str, entry, marker: Marker | None) -> str | None:
    """None when ``rel`` is provably ours, else a short reason naming it."""
    if rel == MARKER or rel == LOCK:
        return None
    name = rel.rsplit("/", 1)[-1]
    tmp = parse_tmp(name)
    if tmp is not None and tmp[0] == MARKER and _self_proving(entry, tmp):
        return None  # a marker being written when the run was killed
    if marker is None:
        return f"{rel} (no {MARKER} marker)"
    if entry.is_dir(follow_symlinks=False):
        return None if rel in marker.folders else f"{rel}/ (not listed in the marker)"
    if not entry.is_file(follow_symlinks=False):
        return f"{rel} (a link or special file)"
    if tmp is not None and (tmp[1] in marker.runs or _self_proving(entry, tmp)):
        return None
    claims = marker.claims(rel)
    if not claims:
        return f"{rel} (not listed in the marker)"
    st = entry.stat(follow_symlinks=False)
    sized = [c for c in claims if c.size == st.st_size]
    if not sized:
        return f"{rel} (size {st.st_size}, the marker says {claims[-1].size}: changed)"
    if any(c.ident is not None and ident_of(st) == c.ident for c in sized):
        return None
    if sha256_file(entry.path) not in {c.sha256 for c in sized}:
        return f"{rel} (its contents differ from what tarka-jax wrote)"
    return None


def survey(folder: str, *, marker: Marker | None | bool = True,
           missing_is_foreign: bool = True) -> Survey:
    """Classify every entry below ``folder``; ``marker=True`` reads (and validates) its own.

    ``missing_is_foreign``: a claimed file that is absent counts against the folder (it is
    not the folder we wrote); corpus receipts, which are claims made ahead of a rename,
    pass False.
    """
    if marker is True:
        marker = read_marker(folder)
    owned, folders, foreign = {}, [], []
    for rel, entry in walk(folder):
        why = _why_not_ours(rel, entry, marker or None)
        if why is not None:
            foreign.append(why)
        elif entry.is_dir(follow_symlinks=False):
            folders.append(rel)
        elif rel != LOCK:
            owned[rel] = ident_of(entry.stat(follow_symlinks=False))
    if marker and missing_is_foreign:
        foreign += [f"{rel} (listed in the marker but missing)" for rel in sorted(marker.files)
                    if rel not in owned]
    return Survey(folder, owned, folders, foreign, marker or None)


def remove_owned(survey_: Survey, keep=()) -> list[str]:
    """Delete the owned files (not ``keep``) whose stat is unchanged; returns what was kept.

    Kept: anything not owned, a file changed since the survey, a non-empty folder.
    """
    kept = list(survey_.foreign)
    for rel, ident in survey_.owned.items():
        if rel in keep or rel == MARKER:
            continue
        path = os.path.join(survey_.folder, *rel.split("/"))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if ident_of(st) != ident:
            kept.append(f"{rel} (changed while tarka-jax worked)")
            continue
        os.remove(path)
    for rel in sorted(survey_.folders, key=lambda r: -r.count("/")):
        try:
            os.rmdir(os.path.join(survey_.folder, *rel.split("/")))
        except OSError:
            kept.append(f"{rel}/ (not empty)")
    marker = os.path.join(survey_.folder, MARKER)
    if not kept and MARKER not in keep and os.path.lexists(marker):
        os.remove(marker)  # last: while anything is left, the marker still speaks for it
    return kept


__all__ = [
    "LOCK",
    "MARKER",
    "Claim",
    "Marker",
    "Survey",
    "UnsafeOutputError",
    "check_relpath",
    "claim_file",
    "claim_folder",
    "new_run_id",
    "parse_claim",
    "parse_marker",
    "parse_tmp",
    "read_marker",
    "remove_owned",
    "survey",
    "tmp_name",
    "why_not_ours",
    "write_marker",
]
