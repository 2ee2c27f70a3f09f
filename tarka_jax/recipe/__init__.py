"""The Tarka recipe on top of the distillation loop.

* :mod:`.init_student` -- a student from a teacher and a new tokenizer (``tarka-jax init-student``).
* :mod:`.teacher_cache` -- teacher embeddings computed once (``tarka-jax cache-teacher``).
* :mod:`.prompts` -- the task-prompt mix applied identically to teacher and student inputs.
* :mod:`.evaluate` -- held-out cosine and nearest-neighbour agreement (``tarka-jax evaluate``).
"""
