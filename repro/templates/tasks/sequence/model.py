"""{{title_py}}: the whole model lives in this file (pure torch: no Lightning, Hydra, file IO or repro).

TODO: replace the toy character-level GRU language model with the paper's model, one nn.Module
per layer in paper order, a shape comment on each tensor line, and `# DEVIATION:` / `# UNSTATED:`
where the paper is silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """The `model:` keys; their values (and where each comes from) are in conf/paper/{{paper}}.yaml."""

    embedding: int = field(metadata={"ge": 1})  # TODO: the paper's sizes
    hidden: int = field(metadata={"ge": 1})
    dropout: float = field(metadata={"ge": 0, "lt": 1})


MODEL_CONFIG = ModelConfig  # repro checks the `model:` keys against it and passes build_model one


class LanguageModel(nn.Module):
    """TODO: the paper's model. Here: embeddings, a one-layer GRU reading left to right, and a
    linear layer to the next token's logits. Left to right only, so padding after a sentence
    cannot change its predictions (the shapes gate checks each example alone vs in its batch)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embedding, padding_idx=0)
        self.rnn = nn.GRU(cfg.embedding, cfg.hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, vocab_size)  # output layer: repro's init starts it small

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(tokens))  # (B, T, H)
        return self.out(self.drop(h))  # (B, T, V) logits of the next token


def build_model(cfg: ModelConfig, *, vocab_size: int) -> nn.Module:
    """What repro calls: cfg is the config's `model:` section (typed); the rest comes from the data."""
    return LanguageModel(cfg, vocab_size)
