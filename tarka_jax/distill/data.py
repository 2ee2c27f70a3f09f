"""Raw text -> paired (student, teacher) token batches, with a resumable position.

Minimal by design (the next issue extends it): every text of the listed files is
held in memory; each epoch visits them in a permutation seeded by
``(seed, epoch)``; batch ``i`` of an epoch is texts ``order[i*B:(i+1)*B]`` (the
last partial batch of an epoch is dropped, a different remainder each epoch).
The whole position is ``{"epoch", "index", "seed", "num_texts"}``: saved with
every checkpoint, restored on resume, so a resumed run sees the very same
batches. (grain's checkpointable iterators would do the same; this keeps the
GPU image, which lacks grain, able to train.)

Each text is tokenised by both tokenizers over the same character span: when
either truncates it, the text is cut at the last character that tokenizer kept
and both encode the cut text. Rows are padded to the smallest length bucket
that fits, so the step compiles once per bucket pair, not once per batch.

Instruction-aware data: ``TextBatches(prompts=...)`` gives each corpus text a
prompt string (see :mod:`tarka_jax.text.prompts`) that is prepended for *both*
tokenizers. With a teacher cache the pair tokenizer has no teacher
(``teacher=None``): only student rows are made, and each batch carries the
corpus ``index`` of its rows so the cache rows can be looked up.

Multi-host: every host reads the same files and tokenises the whole global batch
(so all hosts agree on the padded length), then keeps its own contiguous rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tarka_jax.text.rows import bucket_for, length_buckets
from tarka_jax.text.tokenizer import TextTokenizer
from tarka_jax.train.data import DataError, EpochPosition


class PairTokenizer:
    """Tokenise texts with the student's and the teacher's tokenizers over one span."""

    def __init__(self, student: TextTokenizer, teacher: TextTokenizer | None, *,
                 student_prompt: str = "", teacher_prompt: str = "",
                 student_buckets: Sequence[int] = (), teacher_buckets: Sequence[int] = ()):
        self.student, self.teacher = student, teacher
        self.prompts = (student_prompt, teacher_prompt)
        self.buckets = (self._buckets(student, student_buckets),
                        self._buckets(teacher, teacher_buckets) if teacher is not None else ())

    @staticmethod
    def _buckets(tok: TextTokenizer, given: Sequence[int]) -> tuple[int, ...]:
        if given:
            return tuple(sorted(given))
        if tok.max_seq_length is None:
            raise DataError("a tokenizer without max_seq_length needs explicit data.buckets")
        return tuple(length_buckets(tok.max_seq_length))

    def _cut(self, text: str, common: str = "") -> str:
        """Text cut at the last character both tokenizers keep (unchanged if none truncates).

        ``common``: a prompt prepended for both tokenizers (after their own prompts).
        """
        end = len(text)
        for tok, own in zip((self.student, self.teacher), self.prompts):
            if tok is None:
                continue
            prompt = own + common
            enc = tok.backend.encode(prompt + text)
            if not enc.overflowing:
                continue
            kept = [o[1] for o, special in zip(enc.offsets, enc.special_tokens_mask)
                    if not special]
            end = min(end, max(0, (max(kept) if kept else 0) - len(prompt)))
        return text[:end]

    def __call__(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> dict:
        """Token rows of each model; ``prompts``: one string per text, prepended for both."""
        common = list(prompts) if prompts is not None else [""] * len(texts)
        texts = [p + self._cut(t, p) for t, p in zip(texts, common)]
        out = {}
        for name, tok, prompt, buckets in zip(("student", "teacher"), (self.student, self.teacher),
                                              self.prompts, self.buckets):
            if tok is None:
                continue
            ids = tok.encode(texts, prompt=prompt or None)
            longest = max(len(x) for x in ids)
            width = bucket_for(longest, buckets)
            if width < longest:
                raise DataError(f"a {name} text has {longest} tokens, more than the largest "
                                f"bucket {buckets[-1]}; raise data.buckets or lower "
                                "max_seq_length")
            out[name] = tok.pad(ids, row_length=None, buckets=(width,))
        return out


class TextBatches(EpochPosition):
    """Deterministic, resumable iterator of global batches (this host's rows); the position
    and its checks are :class:`~tarka_jax.train.data.EpochPosition`'s."""

    count_key = "num_texts"

    def __init__(self, texts: Sequence[str], tokenize: PairTokenizer, batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1,
                 prompts: Sequence[str] | None = None):
        super().__init__(len(texts), batch_size, seed, process_index, process_count, "texts")
        self.texts = list(texts)
        if prompts is not None and len(prompts) != len(self.texts):
            raise DataError(f"{len(prompts)} prompts for {len(self.texts)} texts")
        self.prompts = list(prompts) if prompts is not None else None
        self.tokenize = tokenize
        self._order_epoch, self._order = None, None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.texts) // self.batch_size

    def _order_for(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order, self._order_epoch = rng.permutation(len(self.texts)), epoch
        return self._order

    def global_indices(self) -> np.ndarray:
        """Corpus indices of the next global batch (no advance)."""
        order = self._order_for(self.epoch)
        return order[self.index * self.batch_size:(self.index + 1) * self.batch_size]

    def global_texts(self) -> list[str]:
        """Texts of the next global batch (no advance)."""
        return [self.texts[i] for i in self.global_indices()]

    def __next__(self) -> dict:
        chosen = self.global_indices()
        prompts = [self.prompts[i] for i in chosen] if self.prompts is not None else None
        batch = self.tokenize([self.texts[i] for i in chosen], prompts)
        self.advance(self.batches_per_epoch)
        rows = self.local_rows()
        out = {name: {k: v[rows] for k, v in part.items()} for name, part in batch.items()}
        out["index"] = np.asarray(chosen[rows], np.int64)
        return out
