"""One reader for text that comes from outside: files, stdin, directories.

Why one place: every input path must treat the edges the same way —

* a UTF-8 byte-order mark is dropped (left in, it becomes part of the first word,
  an unknown token, and the text no longer matches itself);
* Windows (CRLF) and old Mac (CR) line ends become ``\\n``;
* invalid UTF-8 is refused with ``file:line`` and the offending byte, unless the
  caller chose ``errors="replace"`` (U+FFFD for each bad byte) explicitly;
* a directory read says what it read and what it skipped.

The Python API takes ``str`` already; :func:`check_encodable` refuses lone
surrogates there (they cannot be tokenised as UTF-8) with the index of the text.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from collections.abc import Sequence

from tarka_jax.errors import TarkaError

ERRORS = ("strict", "replace")
DOC_EXTENSIONS = (".txt", ".md")
_BOM = "\ufeff"


class TextInputError(TarkaError):
    """Text input we cannot read as asked (the message names the file and line)."""


def _check_errors(errors: str) -> None:
    if errors not in ERRORS:
        raise TextInputError(f"errors must be one of {ERRORS}, got {errors!r}")


def decode(data: bytes, source: str, errors: str = "strict") -> str:
    """UTF-8 ``data`` -> str: BOM dropped, CRLF / CR -> LF; bad bytes refused or replaced.

    Raises:
      TextInputError: invalid UTF-8 with ``errors="strict"``, naming ``source:line``.
    """
    _check_errors(errors)
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TextInputError(
            f"{source}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); convert the "
            "input to UTF-8, or pass --errors replace (errors=\"replace\") to read bad "
            "bytes as U+FFFD") from None
    text = text.removeprefix(_BOM)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_file(path: str | os.PathLike, errors: str = "strict") -> str:
    """A whole text file, decoded as :func:`decode` does (a FIFO or device is refused
    unopened: reading one could block forever)."""
    kind = special_kind(path)
    if kind is not None:
        raise TextInputError(f"{os.fspath(path)} is {kind}, not a regular file")
    with open(path, "rb") as f:
        return decode(f.read(), os.fspath(path), errors)


def read_stdin(errors: str = "strict", *, hint: str | None = None) -> str:
    """All of stdin as text; on a terminal, print ``hint`` first (it would just wait)."""
    stream = sys.stdin
    if hint and stream.isatty():
        print(hint, file=sys.stderr)
    raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if isinstance(raw, str):  # a text stream without a byte buffer (tests, notebooks)
        raw = raw.encode("utf-8", "surrogateescape")
    return decode(raw, "<stdin>", errors)


def split_lines(text: str) -> list[str]:
    """Every line of ``text`` (blank ones too: line i is text i); a final newline ends, not adds."""
    parts = text.split("\n")
    return parts[:-1] if parts and parts[-1] == "" else parts


def lines(text: str) -> list[tuple[int, str]]:
    """``[(line number, line)]`` of the non-blank lines, surrounding whitespace kept."""
    return [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


@dataclasses.dataclass
class DirectoryRead:
    """What :func:`read_directory` read: one text per file, plus what it left out."""

    folder: str
    names: list[str]  # relative paths, "/"-separated, sorted
    texts: list[str]
    skipped_files: list[str]
    skipped_folders: list[str]
    skipped_special: list[str] = dataclasses.field(default_factory=list)  # FIFOs, devices

    def summary(self) -> str:
        exts = ", ".join(DOC_EXTENSIONS)
        parts = [f"read {len(self.names)} file(s) ({exts}) from {self.folder}"]
        if self.skipped_files:
            parts.append(f"skipped {len(self.skipped_files)} other file(s) "
                         f"({_preview(self.skipped_files)})")
        if self.skipped_special:
            parts.append(f"skipped {len(self.skipped_special)} non-regular file(s), never "
                         f"opened ({_preview(self.skipped_special)})")
        if self.skipped_folders:
            parts.append(f"skipped {len(self.skipped_folders)} subfolder(s) "
                         f"({_preview(self.skipped_folders)}; pass --recursive to read them)")
        return "; ".join(parts)


def read_directory(folder: str | os.PathLike, *, recursive: bool = False,
                   extensions: Sequence[str] = DOC_EXTENSIONS,
                   errors: str = "strict") -> DirectoryRead:
    """One text per file with one of ``extensions`` (case-insensitive), sorted by path."""
    folder = os.fspath(folder)
    names, skipped, folders, special = [], [], [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel = os.path.relpath(root, folder)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        if not recursive:
            folders.extend(prefix + d + "/" for d in dirs)
            dirs.clear()
        for name in sorted(files):
            kind = special_kind(os.path.join(root, name))
            if kind is not None:  # a FIFO would block open() forever: never opened
                special.append(f"{prefix}{name} ({kind})")
                continue
            target = names if name.lower().endswith(tuple(extensions)) else skipped
            target.append(prefix + name)
    texts = [read_file(os.path.join(folder, *n.split("/")), errors) for n in names]
    return DirectoryRead(folder, names, texts, skipped, folders, special)


def special_kind(path: str | os.PathLike) -> str | None:
    """None for a regular file (links followed) or a missing one; else what it is."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device")


def check_encodable(texts: Sequence[str]) -> None:
    """Refuse texts holding lone surrogates (not encodable as UTF-8), naming the first.

    Raises:
      ValueError: ``texts[i]`` holds a lone surrogate, with its position.
    """
    try:
        "".join(texts).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TextInputError(
                f"texts[{i}] holds a lone surrogate {text[e.start]!r} at character {e.start}: "
                "not valid Unicode text (decode bytes with errors='replace', or remove it)"
            ) from None


def _preview(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


__all__ = [
    "ERRORS",
    "DirectoryRead",
    "TextInputError",
    "check_encodable",
    "decode",
    "lines",
    "read_directory",
    "read_file",
    "read_stdin",
    "special_kind",
    "split_lines",
]
