"""A student from a teacher and a new tokenizer: the Tarka initialisation.

Tarka-Embedding-150M = EmbeddingGemma's 24 layers and Dense head with the LFM2
tokenizer (64,400 tokens) and a new embedding table. This builds that starting
point from any teacher of our architecture and any ``tokenizer.json``:

1. The transformer layers, final norm and Dense head are copied unchanged.
2. Each student token is turned back into the text it stands for
   (:func:`token_texts`: WordPiece ``##`` continuations lose the prefix, other
   WordPiece tokens start a word and get a leading space; byte-level BPE
   characters are mapped back to bytes, ``Ġ`` is a space; SentencePiece / metaspace
   ``▁`` is a space and ``<0xAB>`` byte-fallback pieces are bytes), that text is
   tokenised by the *teacher's* tokenizer without special tokens, and the student
   row is the mean of the teacher's embedding rows of those pieces.
3. Special tokens map by role (``bos``/``eos``/``pad``/``unk``/``cls``/``sep``/
   ``mask`` in both ``tokenizer_config.json`` files), else to the teacher token of
   the same string.
4. **Fallback.** A token whose text is empty, is not valid UTF-8 on its own (a
   lone byte of a multi-byte character) or is a special token the teacher lacks
   gets a random row: normal with the per-coordinate mean and standard deviation
   of the teacher's table (so its scale matches the mapped rows), seeded. Their
   number is reported (``InitReport.random``).
5. Optionally some layers are re-initialised (``reinit_layers``), and the last
   Dense layer replaced to change the output width (``output_dim``; also what
   ``[model] student_output_dim`` of a distillation run does).

The result is a normal sentence-transformers folder with the student's tokenizer
and the teacher's prompts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from tarka_jax.files.jsonfiles import read_json, read_optional_json, write_json

SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token", "cls_token", "sep_token",
                 "mask_token")


@dataclasses.dataclass
class InitReport:
    """What :func:`transplant_embeddings` did, token by token class."""

    vocab_size: int
    mapped: int  # ordinary tokens averaged from teacher pieces
    special: int  # special tokens mapped to a teacher token
    random: int  # fallback rows
    random_ids: list[int]
    mean_pieces: float  # teacher pieces per mapped token

    def summary(self) -> str:
        return (f"{self.vocab_size} student tokens: {self.mapped} mapped through the teacher "
                f"tokenizer ({self.mean_pieces:.2f} teacher pieces each on average), "
                f"{self.special} special tokens mapped by role/string, {self.random} random "
                "(no teacher counterpart)")


# ---- token -> text ---------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what ByteLevel pre-tokenizers use)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _components(node) -> list[dict]:
    """A pre_tokenizer / decoder node flattened through ``Sequence``s."""
    if not isinstance(node, dict):
        return []
    inner = node.get("pretokenizers") or node.get("decoders")
    if node.get("type") == "Sequence" and isinstance(inner, list):
        return [c for x in inner for c in _components(x)]
    return [node]


def _style(tokenizer_json: dict) -> tuple[str, dict]:
    """("wordpiece" | "bytelevel" | "metaspace" | "plain", details) of a tokenizer.json."""
    model = tokenizer_json.get("model") or {}
    parts = (_components(tokenizer_json.get("pre_tokenizer"))
             + _components(tokenizer_json.get("decoder")))
    types = {p.get("type") for p in parts}
    if model.get("type") == "WordPiece":
        return "wordpiece", {"prefix": model.get("continuing_subword_prefix") or "##"}
    if "ByteLevel" in types:
        return "bytelevel", {}
    if "Metaspace" in types:
        meta = next(p for p in parts if p.get("type") == "Metaspace")
        return "metaspace", {"replacement": meta.get("replacement", "▁")}
    if any(p.get("type") == "Replace" and "▁" in json.dumps(p) for p in parts):
        return "metaspace", {"replacement": "▁"}  # Gemma / Llama-style SentencePiece BPE
    return "plain", {}


def _byte_fallback(token: str) -> bytes | None:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            return None
    return None


def token_text(token: str, style: str, details: dict) -> str | None:
    """The text one (non-special) token stands for, or None when it has none on its own."""
    if style == "wordpiece":
        prefix = details["prefix"]
        return token[len(prefix):] if token.startswith(prefix) else " " + token
    if style == "bytelevel":
        try:
            raw = bytes(_UNICODE_TO_BYTE[c] for c in token)
        except KeyError:  # an added token written as plain text
            return token
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None  # a lone byte of a multi-byte character
    if style == "metaspace":
        raw = _byte_fallback(token)
        if raw is not None:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return None
        return token.replace(details["replacement"], " ")
    return token


def token_texts(tokenizer_json: dict, backend) -> list[str | None]:
    """The text of every id of ``backend`` (a ``tokenizers.Tokenizer``); specials give None."""
    style, details = _style(tokenizer_json)
    special = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
    out: list[str | None] = []
    for i in range(backend.get_vocab_size(with_added_tokens=True)):
        token = backend.id_to_token(i)
        if token is None or i in special:
            out.append(None)
            continue
        text = token_text(token, style, details)
        out.append(text if text else None)
    return out


# ---- the embedding table --------------------------------------------------------------------


def _special_roles(folder: str) -> dict[str, str]:
    cfg = read_optional_json(folder, "tokenizer_config.json")
    out = {}
    for role in SPECIAL_ROLES:
        value = cfg.get(role)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            out[role] = value
    return out


def _load_backend(folder: str):
    from tokenizers import Tokenizer

    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    data = read_json(path)
    backend = Tokenizer.from_str(json.dumps(data))
    backend.no_truncation()
    backend.no_padding()
    return data, backend


def transplant_embeddings(teacher_table: np.ndarray, teacher_folder: str, student_folder: str,
                          *, seed: int = 0) -> tuple[np.ndarray, InitReport]:
    """A ``[V_student, E]`` table from the teacher's ``[V_teacher, E]`` one (module docstring)."""
    t_json, t_backend = _load_backend(teacher_folder)
    s_json, s_backend = _load_backend(student_folder)
    texts = token_texts(s_json, s_backend)
    table = np.asarray(teacher_table, np.float32)
    v_teacher = table.shape[0]
    out = np.empty((len(texts), table.shape[1]), np.float32)
    filled = np.zeros(len(texts), bool)

    # Specials: by role, then by identical string.
    t_roles, s_roles = _special_roles(teacher_folder), _special_roles(student_folder)
    by_token = {tok: role for role, tok in s_roles.items()}
    special = 0
    for i, tok in s_backend.get_added_tokens_decoder().items():
        if not tok.special or i >= len(texts):
            continue
        role = by_token.get(tok.content)
        target = t_roles.get(role) if role else None
        j = t_backend.token_to_id(target) if target else None
        if j is None:
            j = t_backend.token_to_id(tok.content)
        if j is not None and j < v_teacher:
            out[i], filled[i] = table[j], True
            special += 1

    pieces = 0
    mapped = 0
    # Same tokenizer style and the very same token string: take the teacher's row as is
    # (exact for a shared vocabulary; "##er" keeps its continuation meaning).
    if _style(t_json)[0] == _style(s_json)[0]:
        for i, text in enumerate(texts):
            j = t_backend.token_to_id(s_backend.id_to_token(i)) if text is not None else None
            if j is not None and j < v_teacher and not filled[i]:
                out[i], filled[i] = table[j], True
                mapped += 1
                pieces += 1
    valid = [(i, t) for i, t in enumerate(texts) if t is not None and not filled[i]]
    encodings = t_backend.encode_batch([t for _, t in valid], add_special_tokens=False)
    for (i, _), enc in zip(valid, encodings):
        ids = [j for j in enc.ids if j < v_teacher]
        if not ids:
            continue
        out[i], filled[i] = table[ids].mean(axis=0), True
        mapped += 1
        pieces += len(ids)

    missing = np.flatnonzero(~filled)
    rng = np.random.default_rng(seed)
    mean, std = table.mean(axis=0), table.std(axis=0)
    out[missing] = mean + std * rng.standard_normal((len(missing), table.shape[1]),
                                                    dtype=np.float32)
    report = InitReport(vocab_size=len(texts), mapped=mapped, special=special,
                        random=len(missing), random_ids=missing.tolist(),
                        mean_pieces=pieces / max(mapped, 1))
    return out, report


def init_student(teacher: str, tokenizer_folder: str, out_dir: str, *,
                 reinit: Sequence[int] = (), output_dim: int = 0, seed: int = 0,
                 max_seq_length: int | None = None, force: bool = False) -> InitReport:
    """Write the student folder (``force``: replace an earlier output of ours); the report."""
    from tarka_jax.convert import open_model
    from tarka_jax.convert.sources import resolve_folder
    from tarka_jax.convert.st_folder import save_sentence_transformers
    from tarka_jax.distill.surgery import reinit_layers, resize_output
    from tarka_jax.files.outputs import check_output, output_folder
    from tarka_jax.text.tokenizer import TextTokenizer

    check_output(out_dir, sources=[teacher, tokenizer_folder], force=force)  # before any work
    ckpt = open_model(teacher)
    tokenizer_folder = resolve_folder(tokenizer_folder)
    table, report = transplant_embeddings(
        ckpt.params["encoder"]["embed_tokens"]["embedding"], ckpt.folder, tokenizer_folder,
        seed=seed)
    pad = TextTokenizer.from_folder(tokenizer_folder, max_seq_length=None).pad_token_id
    config = ckpt.config.replace(vocab_size=table.shape[0], pad_token_id=pad)
    encoder = {**ckpt.params["encoder"], "embed_tokens": {"embedding": table}}
    params = {**ckpt.params, "encoder": encoder}
    params = reinit_layers(config, params, reinit, seed)
    config, params = resize_output(config, params, output_dim, seed)
    meta = dataclasses.replace(ckpt.meta, max_seq_length=max_seq_length or ckpt.meta.max_seq_length)
    with output_folder(out_dir, sources=[ckpt.folder, tokenizer_folder], force=force) as tmp:
        save_sentence_transformers(tmp, config, params, meta, tokenizer_folder)
        write_json(os.path.join(tmp, "init_student.json"), {
            "teacher": str(teacher), "tokenizer": tokenizer_folder,
            "reinit_layers": list(reinit), "output_dim": config.embedding_dim,
            "seed": seed, **{k: v for k, v in dataclasses.asdict(report).items()
                             if k != "random_ids"},
            "random_ids_first": report.random_ids[:100]})
    return report
