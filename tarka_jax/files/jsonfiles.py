"""Reading and writing the JSON and JSON-lines files every format here uses.

One reader so that a missing or corrupt file is always the same error, naming it.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from typing import Any

from tarka_jax.errors import ConfigError


def read_json(path: str | os.PathLike, what: str | None = None) -> Any:
    """Load a JSON file.

    Raises:
      FileNotFoundError: the file does not exist (the message names ``what`` and ``path``).
      ConfigError: it is not valid JSON.
    """
    what = what or os.path.basename(path)
    check_regular(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} at {path} is not valid JSON: {e}") from None


def check_regular(path: str | os.PathLike, what: str | None = None) -> None:
    """Refuse a FIFO, socket, device or folder where a file is read: opening a FIFO blocks
    forever (a model folder's ``config.json`` made one hung every command that loaded it).

    Raises:
      ConfigError: naming ``what``, the path and what it is. A missing file passes (the
        caller's open names it).
    """
    from tarka_jax.files.text_input import special_kind

    kind = special_kind(path)
    if kind is not None:
        what = what or os.path.basename(path)
        raise ConfigError(f"{what} at {os.fspath(path)} is {kind}, not a regular file")


def read_optional_json(folder: str | os.PathLike, name: str) -> dict:
    """``folder/name`` as a dict, or ``{}`` when the file does not exist."""
    path = os.path.join(folder, name)
    return read_json(path, name) if os.path.exists(path) else {}


def open_fresh_temporary(target: str):
    """``(path, text file)`` of a new temporary beside ``target``: a fresh name
    (``NAME.tmp-<uuid>``), created exclusively and never through a link, so a user's
    ``NAME.tmp`` is never opened. The caller writes it and renames it over ``target``."""
    tmp = f"{target}.tmp-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return tmp, os.fdopen(fd, "w", encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any, *, atomic: bool = False) -> None:
    """Write indented UTF-8 JSON; ``atomic`` writes a temporary file and renames it."""
    target = os.fspath(path)
    if atomic:
        tmp, f = open_fresh_temporary(target)
    else:
        tmp, f = target, open(target, "w", encoding="utf-8")
    with f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    if atomic:
        os.replace(tmp, target)


def read_jsonl(path: str, field: str | None = "text", error: type[Exception] = ValueError):
    """``[(line number, record)]`` of a .jsonl (or gzip-compressed .jsonl.gz) file's
    non-blank lines.

    Every record must be a JSON object, with a string ``field`` unless ``field`` is
    None; anything else (and invalid UTF-8) raises ``error`` naming the file and line.
    """
    from tarka_jax.files.text_input import TextInputError, decode, lines

    records = []
    check_regular(path)
    with open(path, "rb") as f:  # a missing file stays FileNotFoundError, as before
        data = f.read()
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (gzip.BadGzipFile, EOFError) as e:  # not gzip, or cut short
            raise error(f"{path}: {e}") from None
    try:
        text = decode(data, path)  # BOM, CRLF, invalid UTF-8 named by file:line
    except TextInputError as e:
        raise error(str(e)) from None
    for n, line in lines(text):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n} is not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise error(f"{path}:{n} is not a JSON object")
        if field is not None and not isinstance(record.get(field), str):
            raise error(f'{path}:{n} needs a string "{field}" field')
        records.append((n, record))
    return records
