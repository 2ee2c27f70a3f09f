"""Reading text records from JSON-lines files, shared by the CLI and the training data."""

from __future__ import annotations

import json


def read_jsonl(path: str, field: str = "text", error: type[Exception] = ValueError):
    """``[(line number, record)]`` of a .jsonl file's non-blank lines.

    Every record must be a JSON object with a string ``field``; anything else
    raises ``error`` naming the file and line.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{n} is not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise error(f'{path}:{n} needs a string "{field}" field')
            records.append((n, record))
    return records
