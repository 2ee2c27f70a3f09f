"""tarka-jax: a pure JAX/Flax Tarka-Embedding / EmbeddingGemma encoder."""

from tarka_jax._version import __version__
from tarka_jax.config import ModelConfig, DenseSpec, ConfigError
from tarka_jax.model import embed, token_embeddings, init_params
from tarka_jax.tokenizer import TextTokenizer
from tarka_jax.embedder import Embedder, load
from tarka_jax.sentence_transformer import SentenceTransformer
from tarka_jax.quantize import quantize_embeddings

__all__ = ["__version__", "ModelConfig", "DenseSpec", "ConfigError", "embed",
           "token_embeddings", "init_params", "TextTokenizer", "Embedder", "load",
           "SentenceTransformer", "quantize_embeddings"]
