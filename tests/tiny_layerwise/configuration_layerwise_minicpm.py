"""The configuration half of the tiny layerwise reranker's own code (see modeling_layerwise_minicpm.py); a
file apart, as in the real model's folder."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class LayerWiseMiniCPMConfig(PretrainedConfig):
    model_type = "minicpm"

    def __init__(
        self,
        vocab_size: int = 1000,
        hidden_size: int = 32,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 2,
        max_position_embeddings: int = 512,
        start_layer: int = 2,
        head_multi: bool = True,
        head_type: str = "simple",
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.2,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.start_layer = start_layer
        self.head_multi = head_multi
        self.head_type = head_type
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
