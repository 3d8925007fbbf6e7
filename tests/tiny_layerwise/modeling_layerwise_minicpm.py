"""A tiny stand-in for the remote code of BAAI/bge-reranker-v2-minicpm-layerwise, written here (never copied):
`build_tiny_layerwise_reranker` copies this file and configuration_layerwise_minicpm.py into a model folder
and names them in config.json's `auto_map`, so transformers loads them only with `trust_remote_code`.

Same interface shape as the real `LayerWiseMiniCPMForCausalLM`: model_type `minicpm` (which transformers
does not implement), one score head (hidden -> 1) per layer from `start_layer` to `num_hidden_layers`, and a
forward that takes `cutoff_layers=[k, ...]`, runs only the layers up to the largest k, and returns in
`logits` one (batch, positions) score tensor per cut layer: the head of layer k applied to the final norm of
the hidden state after k layers. The decoder itself is minimal: learned positions (read at `position_ids`,
so left padding changes nothing), pre-norm causal self-attention and a feed-forward block."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_layerwise_minicpm import LayerWiseMiniCPMConfig


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        variance = hidden.float().pow(2).mean(dim=-1, keepdim=True)
        return (hidden * torch.rsqrt(variance + self.eps)).to(hidden.dtype) * self.weight


class Block(nn.Module):
    def __init__(self, config: LayerWiseMiniCPMConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.up = nn.Linear(config.hidden_size, 2 * config.hidden_size, bias=False)
        self.down = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        q, k, v = self.qkv(self.attention_norm(hidden)).split(width, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        hidden = hidden + self.out(attended.transpose(1, 2).reshape(batch, length, width))
        return hidden + self.down(nn.functional.silu(self.up(self.mlp_norm(hidden))))


class LayerWiseMiniCPMForCausalLM(PreTrainedModel):
    config_class = LayerWiseMiniCPMConfig
    base_model_prefix = "model"

    def __init__(self, config: LayerWiseMiniCPMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.ModuleList(
            nn.Linear(config.hidden_size, 1, bias=False)
            for _ in range(config.start_layer, config.num_hidden_layers + 1)
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cutoff_layers: int | list[int] | None = None,
        **unused: Any,
    ) -> CausalLMOutputWithPast:
        config = self.config
        layers = [cutoff_layers] if isinstance(cutoff_layers, int) else cutoff_layers
        layers = layers or [config.num_hidden_layers]
        if any(not config.start_layer <= k <= config.num_hidden_layers for k in layers):
            raise ValueError(f"cutoff layers must be in [{config.start_layer}, {config.num_hidden_layers}]")
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).expand(batch, length)
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]
        allowed = allowed | torch.eye(
            length, dtype=torch.bool, device=input_ids.device
        )  # pads see themselves
        hidden = self.embed_tokens(input_ids) + self.embed_positions(position_ids)
        scores: dict[int, torch.Tensor] = {}
        for done in range(max(layers) + 1):
            if done in layers:
                head = self.lm_head[done - config.start_layer]
                scores[done] = head(self.norm(hidden)).float().reshape(batch, length)
            if done < max(layers):
                hidden = self.layers[done](hidden, allowed)
        return CausalLMOutputWithPast(logits=tuple(scores[k] for k in layers))
