"""The ``embed-corpus`` output folder: which states a run may start from, and what it may touch.

A corpus folder is written in place, shard by shard, by P processes, so it cannot be swapped
in whole like a model folder (:mod:`tarka_jax.files.outputs`). Ownership is proven the same
way (:mod:`tarka_jax.files.ownership`), with one addition: *receipts*. Each process appends
a claim (name, size, sha256) for every file it writes to its own hidden receipts file
``.receipts-pNNNNN.jsonl.tarka-tmp-RUNID`` *before* renaming the file into place, and again
(with the inode and times) after; process 0 folds the receipts into the marker when the run
ends. So whatever a kill leaves, every file under a final name has a claim.

States a run accepts (:func:`precheck`, on every process, reading only):

* fresh: no folder, an empty one, or one holding only what a run killed before its first
  manifest left (marker, lock, our temporaries): those are removed;
* ``--resume``: a manifest whose settings match (inputs may differ only where nothing is
  embedded yet); temporaries of this folder's earlier runs are removed, anything else is
  left alone, and a file under a shard's name that is not a finished shard must be ours;
* ``--force``: every entry provably ours (the refusal names the first that is not), never
  the current directory; then exactly those files are removed.
"""

from __future__ import annotations

import json
import os

from tarka_jax.corpus import store
from tarka_jax.corpus.store import CorpusOutputError
from tarka_jax.errors import UsageError
from tarka_jax.files.atomic import disk_errors
from tarka_jax.files.marker import (
    LOCK,
    MARKER,
    Marker,
    UnsafeOutputError,
    check_relpath,
    ident_of,
    parse_claim,
    parse_tmp,
    read_marker,
    tmp_name,
    write_marker,
)
from tarka_jax.files.outputs import report
from tarka_jax.files.ownership import remove_owned, survey

KIND = "embed-corpus"
MAX_RECEIPTS_BYTES = 256 << 20


def receipts_name(process: int) -> str:
    return f"receipts-p{process:05d}.jsonl"


class Receipts:
    """This process's claims, one JSON line each, appended and fsynced."""

    def __init__(self, folder: str, run: str, process: int):
        self.path = os.path.join(folder, tmp_name(receipts_name(process), run))
        self._fd: int | None = None

    def claim(self, name: str, size: int, sha256: str, ident=None) -> None:
        line = {"path": name, "size": size, "sha256": sha256}
        if ident is not None:
            line["ident"] = list(ident)
        with disk_errors(self.path, store._hint(os.path.dirname(self.path))):
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, (json.dumps(line) + "\n").encode())
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _receipt_files(folder: str, runs) -> list[str]:
    out = []
    for name in sorted(os.listdir(folder)):
        tmp = parse_tmp(name)
        if tmp and tmp[1] in runs and tmp[0].startswith("receipts-p"):
            out.append(os.path.join(folder, name))
    return out


def load_claims(folder: str) -> Marker | None:
    """The folder's marker (validated) with its runs' receipts added as alternatives.

    A receipts line that does not parse (a kill mid-append) is skipped: it proves nothing.
    """
    try:
        marker = read_marker(folder)
    except UnsafeOutputError as e:
        raise CorpusOutputError(str(e)) from None
    if marker is None:
        return None
    for path in _receipt_files(folder, marker.runs):
        if os.path.getsize(path) > MAX_RECEIPTS_BYTES:
            continue
        with open(path, "rb") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                    claim = parse_claim(line, path)
                    rel = check_relpath(line.get("path"), path)
                except (ValueError, AttributeError, UnsafeOutputError):
                    continue
                marker.alternatives.setdefault(rel, []).append(claim)
    return marker


def compact(folder: str, marker: Marker) -> Marker:
    """Fold alternatives into claims where the file on disk carries a recorded identity."""
    for rel, claims in list(marker.alternatives.items()):
        try:
            ident = ident_of(os.lstat(os.path.join(folder, rel)))
        except FileNotFoundError:
            del marker.alternatives[rel]
            marker.files.pop(rel, None)
            continue
        match = [c for c in claims if c.ident == ident]
        if match:
            marker.files[rel] = match[-1]
            del marker.alternatives[rel]
    return marker


def _is_leftover(rel: str) -> bool:
    return rel in (MARKER, LOCK) or parse_tmp(rel) is not None


def _refuse_cwd(output: str, flag: str) -> None:
    real, cwd = os.path.realpath(output), os.path.realpath(os.getcwd())
    if cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        raise CorpusOutputError(f"{flag} refused: --output {output} is the current directory "
                                "(or above it); choose a new folder")


def precheck(output: str, new: dict, resume: bool, force: bool):
    """Refuse every state the flags do not allow (reads only).

    Returns ``(old manifest on a resume or None, the survey of the folder or None)``.
    """
    if resume and force:
        raise UsageError("--resume and --force exclude each other")
    if os.path.lexists(output) and not os.path.isdir(output):
        raise CorpusOutputError(f"--output {output} exists and is not a folder")
    if force:
        _refuse_cwd(output, "--force")
    if not os.path.isdir(output) or not os.listdir(output):
        if resume:
            store.read_manifest(output)  # raises: nothing to resume
        return None, None
    claims = load_claims(output)
    found = survey(output, marker=claims, missing_is_foreign=False)
    only_leftovers = not found.foreign and all(_is_leftover(r) for r in found.owned)
    if resume:
        if only_leftovers and store.MANIFEST not in found.owned:
            return None, found  # killed before its first manifest: start afresh
        old = store.read_manifest(output)
        if old["version"] != store.VERSION:
            raise CorpusOutputError(f"--resume refused: {output} was written in format version "
                                    f"{old['version']} (this tarka-jax writes {store.VERSION}); "
                                    "finish it with the tarka-jax that started it, or start "
                                    "over with --force")
        changes = store.describe_changes(old, new, [k for k in store.SETTINGS if k != "inputs"])
        changes += input_changes(old, new, store.done_shards(output, old))
        if changes:
            raise CorpusOutputError(f"--resume refused, the settings differ from {output}'s "
                                    "manifest: " + "; ".join(changes))
        return old, found
    if only_leftovers:
        return None, found
    if not force:
        raise CorpusOutputError(f"--output {output} exists and is not empty; pass --resume "
                                "to continue it or --force to start over")
    if claims is None:
        raise CorpusOutputError(f"--force refused: {output} was not written by tarka-jax (no "
                                f"{MARKER} marker); delete it yourself or choose a new folder")
    if found.foreign:
        raise CorpusOutputError(f"--force refused: {output} holds files tarka-jax did not "
                                f"write or that changed since: {found.refusal()}; move them "
                                "away or choose a new folder")
    return None, found


def input_changes(old: dict, new: dict, done: list[int]) -> list[str]:
    """Why the inputs forbid a resume: a changed file is allowed only with the same record
    count and none of its records in a finished shard (it was fixed before being embedded)."""
    a, b = old.get("inputs") or [], new.get("inputs") or []
    if len(a) != len(b) or [i.get("records") for i in a] != [i.get("records") for i in b]:
        return [f"inputs (their number or record counts differ from "
                f"{[i.get('path') for i in a]})"]
    size, first, out = old["shard_size"], 0, []
    done = set(done)
    for was, now in zip(a, b):
        last = first + now["records"]
        if (was.get("size"), was.get("sha256")) != (now["size"], now["sha256"]):
            hit = [k for k in range(first // size, -(-last // size)) if k in done] \
                if last > first else []
            if hit:
                out.append(f"input {now['path']} changed but its records {first}..{last - 1} "
                           f"are already embedded in {store.shard_name(hit[0])}"
                           + (f" and {len(hit) - 1} more shards" if len(hit) > 1 else ""))
        first = last
    return out


def take(output: str, new: dict, run: str, resume: bool, force: bool) -> dict | None:
    """Process 0, holding the lock: check again, remove what may go, write the marker.

    Returns the old manifest on a resume.
    """
    old, found = precheck(output, new, resume, force)
    claims = found.marker if found is not None else None
    if found is None:
        claims = None
    elif force or old is None:
        kept = remove_owned(found, keep={LOCK})
        if kept and force:
            raise CorpusOutputError(f"--force stopped: {output} changed while it was being "
                                    f"cleared; kept {', '.join(kept[:3])}")
        claims = None
    else:
        _check_collisions(output, old, found)
        stale = [r for r in found.owned if (parse_tmp(r) or ("", ""))[1] in claims.runs
                 and not parse_tmp(r)[0].startswith("receipts-p")] if claims else []
        for rel in stale:
            os.remove(os.path.join(output, rel))
        odd = [r.split(" ")[0] for r in found.foreign if ".tmp" in r]
        if odd:
            report(f"{output}: left alone (tarka-jax cannot prove it wrote them): "
                   + ", ".join(odd[:5]))
    marker = claims or Marker(KIND, [], {}, [])
    old_receipts = _receipt_files(output, marker.runs)
    marker.runs.append(run)
    write_marker(output, compact(output, marker))
    for path in old_receipts:  # folded into the marker above
        os.remove(path)
    return old


def _check_collisions(output: str, manifest: dict, found) -> None:
    """A resume writes only names it may: a non-finished shard's files must be ours or absent."""
    done = set(store.done_shards(output, manifest))
    for name in os.listdir(output):
        k = store.shard_number(name)
        if k is not None and k < manifest["shards"] and k not in done \
                and name not in found.owned:
            raise CorpusOutputError(
                f"--resume refused: {os.path.join(output, name)} is not part of a finished "
                "shard and tarka-jax cannot prove it wrote it; move it away")


def finish(output: str) -> None:
    """Process 0, after every process is done: fold all receipts into the marker."""
    marker = load_claims(output)
    if marker is None:
        return
    receipts = _receipt_files(output, marker.runs)
    write_marker(output, compact(output, marker))
    for path in receipts:
        os.remove(path)


__all__ = ["Receipts", "finish", "input_changes", "load_claims", "precheck", "take"]
