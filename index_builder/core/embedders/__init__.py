"""Text embedders: one interface (``base.Embedder``), three backends (``torch_backend``: sentence-transformers;
``onnx_backend``: ONNX Runtime int8; ``openai_backend``: any /v1/embeddings server), the one factory that
knows them all (``factory``) and the chat's query encoder (``query``). Backends import only ``base``."""
