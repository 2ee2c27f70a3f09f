"""Text to token ids, and the prompts put in front of texts.

* :mod:`~tarka_jax.text.tokenizer` -- :class:`TextTokenizer`: texts -> int32 ``input_ids``,
  ``segment_ids``, ``positions`` (packed or one text per row), as transformers 5.x tokenises;
* :mod:`~tarka_jax.text.rows` -- row widths (length buckets) and best-fit packing of texts into rows;
* :mod:`~tarka_jax.text.prompts` -- EmbeddingGemma's task prompts and sentence-transformers' rule for
  which prompt a query or a document gets.
"""

from tarka_jax.text.tokenizer import TextTokenizer

__all__ = ["TextTokenizer"]
