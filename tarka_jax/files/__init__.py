"""The files tarka-jax reads and writes, whatever the job: JSON / JSON-lines files and text from outside.

* :mod:`~tarka_jax.files.jsonfiles` -- ``read_json``, ``write_json``, ``read_jsonl``: one reader, so a
  missing or corrupt file is always the same one-line error naming it;
* :mod:`~tarka_jax.files.text_input` -- text from files, stdin and folders (BOM, CRLF, invalid UTF-8);
* :mod:`~tarka_jax.files.marker`, :mod:`~tarka_jax.files.ownership` -- what a writer can prove it
  wrote, so it replaces or deletes nothing else (docs/safety.md);
* :mod:`~tarka_jax.files.atomic`, :mod:`~tarka_jax.files.outputs` -- atomic files, folders
  swapped in whole, disk full named;
* :mod:`~tarka_jax.files.joblock` -- one job per output folder.

Bottom of the layering (docs/layout.md): imports nothing of tarka_jax but :mod:`tarka_jax.errors`
(and its own modules).
"""
