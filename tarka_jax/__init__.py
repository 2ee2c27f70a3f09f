"""tarka-jax: a pure JAX/Flax Tarka-Embedding / EmbeddingGemma encoder.

Layering of the package: docs/layout.md.
"""

from tarka_jax._version import __version__
from tarka_jax.convert import open_model
from tarka_jax.errors import TarkaError
from tarka_jax.inference.embedder import Embedder, load
from tarka_jax.inference.quantize import quantize_embeddings
from tarka_jax.inference.sentence_transformer import SentenceTransformer
from tarka_jax.nn.config import ConfigError, DenseSpec, LayerSpec, ModelConfig
from tarka_jax.nn.encoder import embed, init_params, token_embeddings
from tarka_jax.text.tokenizer import TextTokenizer

__all__ = ["__version__", "ModelConfig", "DenseSpec", "LayerSpec", "ConfigError", "TarkaError",
           "embed", "token_embeddings", "init_params", "TextTokenizer", "Embedder", "load",
           "open_model", "SentenceTransformer", "quantize_embeddings"]
