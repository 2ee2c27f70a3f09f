"""The ownership marker: its schema, its claims, and the names of a run's temporaries.

A marker (:data:`MARKER`, JSON, format :data:`FORMAT` version :data:`VERSION`) lists the files a
tarka-jax writer wrote into a folder: relative path -> size, sha256 and (optional) the inode /
mtime / ctime it had. :func:`parse_marker` validates every field before anything is believed;
what the claims prove is :mod:`tarka_jax.files.ownership`'s job.

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


__all__ = [
    "FORMAT",
    "LOCK",
    "MARKER",
    "VERSION",
    "Claim",
    "Marker",
    "UnsafeOutputError",
    "check_relpath",
    "claim_file",
    "ident_of",
    "new_run_id",
    "parse_claim",
    "parse_marker",
    "parse_tmp",
    "read_marker",
    "sha256_file",
    "tmp_name",
    "write_marker",
]
