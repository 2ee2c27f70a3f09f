"""An embedded corpus on disk: ``shard-%06d.npy`` files plus ``manifest.json``; reading it back.

Layout of an ``embed-corpus`` output folder (written by :mod:`tarka_jax.corpus.job`)::

    manifest.json       settings, inputs (size, sha256, records), record count, shards done
    shard-000000.npy    float32 [rows, dim]: records [k*S, (k+1)*S) of the inputs, in order
    rows-000000.npy     int64 [rows, 10]: each row's record, source and window (ROW_COLUMNS)
    ids-000000.json     the --id-field values of those records (only with --id-field)

With ``--chunking chunks`` a shard holds one row per window of its records (so its row
count is known only once it is written); otherwise one row per record. Format version 1
(before chunking and sources) is still read; it has no ``rows-*.npy``.

A shard exists under its final name only once it is complete: it is written under a
temporary name and renamed (``os.replace`` is atomic on POSIX), so a killed job never
leaves a partial shard that a reader or a resume could mistake for a finished one.

Public API: :func:`read_embeddings`, :func:`read_ids` and :func:`read_rows`; docs/corpus.md
has the format.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np

from tarka_jax.errors import TarkaError

FORMAT = "tarka-jax-corpus"
VERSION = 2
READABLE = (1, 2)  # format versions read_embeddings reads
MANIFEST = "manifest.json"
#: Columns of ``rows-%06d.npy``: the record (``text_index``: its number across the inputs),
#: its source (input number in the manifest, byte offset and length of a .txt line's
#: content or a .jsonl line, or the row of a .parquet file and 0), the first 8 bytes of
#: blake2b of its text (UTF-8) as a signed int64, then the window: ``chunk_index``, token
#: span and character span into the text (all -1 unless chunking is "chunks").
ROW_COLUMNS = ("text_index", "input", "offset", "length", "checksum", "chunk_index",
               "token_start", "token_end", "char_start", "char_end")
ROW_WIDTH = len(ROW_COLUMNS)

#: Manifest keys a ``--resume`` must find unchanged (the model by its hash, inputs by content).
SETTINGS = ("model_sha256", "prompt", "dtype", "max_seq_length", "truncate_dim", "normalize",
            "shard_size", "dim", "text_field", "id_field", "batch_size", "errors", "chunking",
            "inputs")
#: Settings older manifests did not record, and the value they ran with.
DEFAULTS = {"errors": "strict", "chunking": {"mode": "truncate"}}


class CorpusOutputError(TarkaError):
    """An output folder that is not (or not yet) what is asked of it."""


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.npy"


def ids_name(k: int) -> str:
    return f"ids-{k:06d}.json"


def rows_name(k: int) -> str:
    return f"rows-{k:06d}.npy"


def chunk_rows(manifest: dict) -> bool:
    """Whether the folder holds one row per window (``--chunking chunks``)."""
    return (manifest.get("chunking") or {}).get("mode") == "chunks"


def text_checksum(text: str) -> int:
    """The ``checksum`` column: 8 bytes of blake2b of the text's UTF-8, as a signed int64."""
    import hashlib

    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def num_shards(records: int, shard_size: int) -> int:
    return -(-records // shard_size)


def shard_rows(manifest: dict, k: int) -> int:
    """Records of shard ``k`` (its rows unless chunking is "chunks"): ``shard_size`` except
    for the last one."""
    size = manifest["shard_size"]
    return min(size, manifest["records"] - k * size)


def _hint(folder: str) -> str:
    return f"free space, then rerun with --resume (the finished shards in {folder} are kept)"


def write_json_atomic(path: str, obj, run_id: str, receipts=None) -> None:
    """JSON under ``.NAME.tarka-tmp-RUNID``, fsynced, renamed into place (claimed first)."""
    data = json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")
    _write(path, lambda w: w.write(data), run_id, receipts)


def write_shard_atomic(path: str, array: np.ndarray, run_id: str, receipts=None,
                       dtype=np.float32) -> None:
    """``np.save`` under ``.NAME.tarka-tmp-RUNID``, fsync, rename: all or nothing.

    Written through a hashing writer (so a full disk is ``DiskFullError`` naming the path,
    not numpy's "N requested and M written") and claimed in ``receipts`` before the rename.
    """
    arr = np.ascontiguousarray(array, dtype)
    _write(path, lambda w: np.lib.format.write_array(w, arr, allow_pickle=False), run_id,
           receipts)


def _write(path: str, fill, run_id: str, receipts) -> None:
    from tarka_jax.files.atomic import write_atomic

    def fill_and_claim(w):
        fill(w)
        if receipts is not None:  # claimed before the rename: a kill leaves no unclaimed file
            receipts.claim(os.path.basename(path), w.size, w.digest.hexdigest())

    claim = write_atomic(path, fill_and_claim, run_id, hint=_hint(os.path.dirname(path)))
    if receipts is not None:
        receipts.claim(os.path.basename(path), claim.size, claim.sha256, claim.ident)


_MANIFEST_TYPES = {"model": str, "model_sha256": str, "dtype": str, "normalize": bool,
                   "shard_size": int, "dim": int, "text_field": str, "inputs": list,
                   "records": int, "shards": int, "shards_done": int, "complete": bool}


def read_manifest(folder: str) -> dict:
    """The folder's manifest, validated: schema, types, and a shard count that matches its
    records (a manifest claiming 10**10 shards is refused here, before any loop)."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise CorpusOutputError(f"{folder} is not an embed-corpus output (no {MANIFEST})")
    from tarka_jax.files.jsonfiles import read_json

    try:
        manifest = read_json(path, "embed-corpus manifest")
    except TarkaError as e:
        raise CorpusOutputError(str(e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorpusOutputError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version") not in READABLE:
        raise CorpusOutputError(f"{path} has format version {manifest.get('version')}; this "
                                f"tarka-jax reads versions {', '.join(map(str, READABLE))}")
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CorpusOutputError(f"{path}: {key!r} is {value!r}, not a {kind.__name__}")
    if manifest["shard_size"] < 1 or manifest["records"] < 0 or not 0 < manifest["dim"] <= 1 << 20:
        raise CorpusOutputError(f"{path}: shard_size, records or dim out of range")
    if manifest["version"] >= 2:
        from tarka_jax.errors import UsageError
        from tarka_jax.text.chunking import ChunkingSpec

        chunking = manifest.get("chunking")
        ok = isinstance(chunking, dict) and not set(chunking) - {"mode", "overlap",
                                                                  "max_chunks"}
        try:
            if ok:
                ChunkingSpec.parse(chunking.get("mode"), chunking.get("overlap", 0),
                                   chunking.get("max_chunks", 1))
        except UsageError:
            ok = False
        if not ok:
            raise CorpusOutputError(f"{path}: 'chunking' is {chunking!r:.200}, not chunking "
                                    "settings")
    if manifest["shards"] != num_shards(manifest["records"], manifest["shard_size"]):
        raise CorpusOutputError(
            f"{path}: {manifest['shards']} shards do not hold {manifest['records']} records of "
            f"{manifest['shard_size']} per shard: the manifest is corrupt")
    return manifest


_NUMBERED = re.compile(r"^(?:shard|ids|rows)-(\d{6,})\.(?:npy|json)$")


def shard_number(name: str) -> int | None:
    """k of ``shard_name(k)``, ``ids_name(k)`` or ``rows_name(k)``; None for any other name."""
    m = _NUMBERED.match(name)
    if not m:
        return None
    k = int(m[1])
    return k if name in (shard_name(k), ids_name(k), rows_name(k)) else None


def present_shards(folder: str, manifest: dict) -> list[int]:
    """Shard numbers with a file under their final name in ``folder`` (a directory listing:
    O(files), never O(the manifest's claim))."""
    found = []
    for name in os.listdir(folder):
        k = shard_number(name)
        if k is not None and k < manifest["shards"] and name == shard_name(k):
            found.append(k)
    return sorted(found)


def shard_ok(folder: str, manifest: dict, k: int) -> bool:
    """Shard ``k`` is present under its final name with the expected header (and ids)."""
    path = os.path.join(folder, shard_name(k))
    if not os.path.isfile(path):
        return False
    if manifest.get("id_field") and not os.path.isfile(os.path.join(folder, ids_name(k))):
        return False
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[1] != manifest["dim"]:
        return False
    records = shard_rows(manifest, k)
    if manifest["version"] < 2:
        return arr.shape[0] == records
    if chunk_rows(manifest):  # at least one window per record, at most max_chunks
        most = records * manifest["chunking"].get("max_chunks", 1)
        if not records <= arr.shape[0] <= most:
            return False
    elif arr.shape[0] != records:
        return False
    try:
        rows = np.load(os.path.join(folder, rows_name(k)), mmap_mode="r")
    except (ValueError, OSError):
        return False
    return rows.dtype == np.int64 and rows.shape == (arr.shape[0], ROW_WIDTH)


def shard_row_count(folder: str, k: int) -> int:
    """Rows of the (finished) shard ``k``, from its header."""
    return len(np.load(os.path.join(folder, shard_name(k)), mmap_mode="r"))


def done_shards(folder: str, manifest: dict) -> list[int]:
    return [k for k in present_shards(folder, manifest) if shard_ok(folder, manifest, k)]


def _complete_manifest(folder: str) -> dict:
    manifest = read_manifest(folder)
    total = manifest["shards"]
    done = done_shards(folder, manifest)
    if len(done) < total:
        done_set = set(done)
        missing = []  # the first few, without walking a huge claimed range
        for k in range(total):
            if k not in done_set:
                missing.append(k)
                if len(missing) == 3:
                    break
        shown = ", ".join(shard_name(k) for k in missing) + (" ..." if total - len(done) > 3
                                                              else "")
        raise CorpusOutputError(f"{folder} is incomplete: {total - len(done)} of "
                                f"{total} shards missing ({shown}); finish it "
                                "with embed-corpus --resume")
    return manifest


class ShardedEmbeddings:
    """A lazy ``[n, dim]`` float32 array over the memory-mapped shards of an output folder.

    Supports ``len``, ``.shape``, integer / slice / index-array row keys (with an optional
    column key: ``emb[10:20, :64]``) and ``np.asarray(emb)``; only the rows asked for are
    read. :meth:`chunks` walks the matrix shard by shard (what corpus search does).
    """

    def __init__(self, folder: str, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self._shards: dict[int, np.ndarray] = {}
        if chunk_rows(manifest):  # rows per shard from the shards' headers
            counts = [len(self.shard(k)) for k in range(manifest["shards"])]
        else:
            counts = [shard_rows(manifest, k) for k in range(manifest["shards"])]
        #: first row of each shard, and the total: ``starts[k] <= row < starts[k + 1]``
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.shape = (int(self.starts[-1]), manifest["dim"])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def shard(self, k: int) -> np.ndarray:
        if k not in self._shards:
            self._shards[k] = np.load(os.path.join(self.folder, shard_name(k)), mmap_mode="r")
        return self._shards[k]

    def chunks(self):
        """``(first row, [rows, dim] memory-mapped shard)`` for every shard, in order."""
        for k in range(self.manifest["shards"]):
            yield int(self.starts[k]), self.shard(k)

    def _rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self.shape[1]), np.float32)
        shard_of = np.searchsorted(self.starts, index, side="right") - 1
        for k in np.unique(shard_of):
            where = np.flatnonzero(shard_of == k)
            out[where] = self.shard(int(k))[index[where] - self.starts[k]]
        return out

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            if not -n <= key < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            out = self._rows(np.array([key % n]))[0]
            return out[rest] if rest else out
        if isinstance(key, slice):
            index = np.arange(*key.indices(n))
        else:
            index = np.asarray(key)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
                raise IndexError("rows must be an int, a slice or a 1-d integer/boolean array")
            if index.size and (index.min() < -n or index.max() >= n):
                raise IndexError(f"row index out of range for {n} rows")
            index = index % n if n else index
        out = self._rows(index)
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"ShardedEmbeddings({self.folder!r}, shape={self.shape})"


def read_embeddings(folder: str, mmap: bool = False):
    """The embeddings of a finished ``embed-corpus`` folder, in input order.

    Returns a float32 ``np.ndarray [n, dim]``; with ``mmap=True`` a lazy
    :class:`ShardedEmbeddings` instead (nothing is read until it is indexed). An
    unfinished folder (shards missing) is an error naming them.
    """
    folder = os.fspath(folder)
    lazy = ShardedEmbeddings(folder, _complete_manifest(folder))
    return lazy if mmap else np.asarray(lazy)


def read_ids(folder: str) -> list:
    """Record ids in input order: the ``--id-field`` values, else the record numbers 0..n-1."""
    folder = os.fspath(folder)
    manifest = _complete_manifest(folder)
    if not manifest.get("id_field"):
        return list(range(manifest["records"]))
    ids: list = []
    for k in range(manifest["shards"]):
        with open(os.path.join(folder, ids_name(k)), encoding="utf-8") as f:
            ids.extend(json.load(f))
    return ids


def read_rows(folder: str, mmap: bool = False) -> np.ndarray:
    """int64 ``[rows, 10]``: what each embedding row is (:data:`ROW_COLUMNS`), in row order.

    ``read_rows(f)[:, 0]`` is each row's record number; with ``--chunking chunks``
    columns 5..9 are its window's ``chunk_index``, token span and character span. With
    ``mmap=True`` the shards' tables are read one at a time (a list of memory maps).
    """
    folder = os.fspath(folder)
    manifest = _complete_manifest(folder)
    if manifest["version"] < 2:
        raise CorpusOutputError(f"{folder} has format version 1: it records no rows table "
                                "(embed it again to get one)")
    parts = [np.load(os.path.join(folder, rows_name(k)), mmap_mode="r")
             for k in range(manifest["shards"])]
    if mmap:
        return parts
    return np.concatenate(parts) if parts else np.zeros((0, ROW_WIDTH), np.int64)


def describe_changes(old: dict, new: dict, keys: Sequence[str] = SETTINGS) -> list[str]:
    """Human-readable differences between two manifests' settings (empty: same)."""
    changes = []
    for key in keys:
        a, b = old.get(key, DEFAULTS.get(key)), new.get(key, DEFAULTS.get(key))
        if key == "inputs":
            a = [(i.get("size"), i.get("sha256"), i.get("records")) for i in a or []]
            b = [(i.get("size"), i.get("sha256"), i.get("records")) for i in b or []]
            if a != b:
                changes.append("inputs (their number, sizes or contents differ from "
                               f"{[i['path'] for i in old.get('inputs') or []]})")
        elif a != b:
            label = "model" if key == "model_sha256" else key
            shown = (f"{old.get('model')!r} (sha256 {str(a)[:12]}) vs {new.get('model')!r} "
                     f"(sha256 {str(b)[:12]})") if key == "model_sha256" else f"{a!r} vs {b!r}"
            changes.append(f"{label}: {shown}")
    return changes


__all__ = ["ROW_COLUMNS", "ShardedEmbeddings", "read_embeddings", "read_ids", "read_rows"]
