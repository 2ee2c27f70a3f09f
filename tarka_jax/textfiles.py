"""Reading text records from JSON-lines files, shared by the CLI and the training data."""

from __future__ import annotations

import json


def read_jsonl(path: str, field: str = "text", error: type[Exception] = ValueError):
    """``[(line number, record)]`` of a .jsonl file's non-blank lines.

    Every record must be a JSON object with a string ``field``; anything else
    raises ``error`` naming the file and line.
    """
    from tarka_jax.text_input import TextInputError, lines, read_file

    records = []
    try:
        text = read_file(path)  # BOM, CRLF, invalid UTF-8 named by file:line
    except TextInputError as e:
        raise error(str(e)) from None
    for n, line in lines(text):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n} is not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise error(f'{path}:{n} needs a string "{field}" field')
        records.append((n, record))
    return records
