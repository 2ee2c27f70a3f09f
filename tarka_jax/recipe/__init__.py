"""The Tarka recipe on top of the distillation loop (imports the training core; never the reverse).

* :mod:`.bpe_tokenizer` -- a byte-level BPE vocabulary for the student (``tarka-jax train-tokenizer``).
* :mod:`.init_student` -- a student from a teacher and a new tokenizer (``tarka-jax init-student``).
* :mod:`.teacher_cache` -- teacher embeddings computed once (``tarka-jax cache-teacher``).
* :mod:`.evaluate` -- held-out cosine and nearest-neighbour agreement (``tarka-jax evaluate``).
"""
