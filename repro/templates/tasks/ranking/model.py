"""{{title_py}}: the whole model lives in this file (pure torch: no Lightning, Hydra, file IO or repro).

TODO: replace the toy scorer with the paper's model, one nn.Module per layer in paper order, a
shape comment on each tensor line, and `# DEVIATION:` / `# UNSTATED:` where the paper is silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """The `model:` keys; their values (and where each comes from) are in conf/paper/{{paper}}.yaml."""

    hidden: int = field(metadata={"ge": 1})  # TODO: the paper's width
    dropout: float = field(metadata={"ge": 0, "lt": 1})  # TODO: the paper's dropout


MODEL_CONFIG = ModelConfig  # repro checks the `model:` keys against it and passes build_model one


class Scorer(nn.Module):
    """TODO: the paper's model. Here: an MLP on [query + item; query * item; |query - item|] -> one
    score per item (each item scored on its own, so its score cannot depend on the other items of
    its query; symmetric in query and item by construction, as the paper config declares)."""

    def __init__(self, cfg: ModelConfig, n_features: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3 * n_features, cfg.hidden),
            nn.ReLU(),  # repro's default init gives the layer before a ReLU He init
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 1),  # output layer: repro's init starts it small
        )

    def forward(self, query: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([query + item, query * item, (query - item).abs()], -1)  # (B, 3F)
        return self.net(pair).squeeze(-1)  # (B,) a relevance score per item


def build_model(cfg: ModelConfig, *, n_features: int) -> nn.Module:
    """What repro calls: cfg is the config's `model:` section (typed); the rest comes from the data."""
    return Scorer(cfg, n_features)
