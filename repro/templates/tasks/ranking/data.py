"""{{title_py}}: the data, as a LightningDataModule that repro's gates inspect.

TODO: replace the toy ranking data (queries and candidate items as vectors; an item is relevant
when it points the query's way) with the paper's. Each example is one (query, item) pair: its
"label" says whether the item is relevant (1) or not (0) and its "group" names the query (any
string or integer id). Return the official train/val/test split from load_examples when the
dataset has one; return {"all": [...]} and repro splits whole queries 80/10/10 (a query never
has items in two splits). Fit whatever comes from the data in build() from splits["train"] alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from repro.config.schema import DataConfig
from repro.config.typed import from_dict
from repro.data.datamodule import PaperDataModule, group_id


@dataclass(frozen=True)
class ToyData:
    """This paper's own `data:` keys (repro's, such as batch_size, are in DataConfig); their
    values are in conf/paper/{{paper}}.yaml."""

    dataset: str
    n_queries: int = field(metadata={"ge": 3})
    items_per_query: int = field(metadata={"ge": 2})
    n_features: int = field(metadata={"ge": 1})


DATA_CONFIG = ToyData  # repro checks this paper's `data:` keys against it before a run starts


class ToyDataModule(PaperDataModule):
    num_classes = None  # a ranker scores items: no classes
    input_fields = ("query", "item")

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__(cfg, seed)
        self.toy = from_dict(ToyData, cfg.options, "data")  # a typo fails here, naming the key

    def load_examples(self) -> dict[str, list[dict]]:
        rng = random.Random(1234)  # the dataset is fixed; the run's seed only affects the split
        d, k = self.toy.n_features, self.toy.items_per_query
        examples = []
        for q in range(self.toy.n_queries):
            query = [rng.gauss(0, 1) for _ in range(d)]
            items = [[rng.gauss(0, 1) for _ in range(d)] for _ in range(k)]
            sims = [sum(a * b for a, b in zip(query, it)) for it in items]
            best = max(sims)
            for it, sim in zip(items, sims):  # items that point the query's way are relevant
                label = int(sim > 1.0 or sim == best)  # (and the best, so every query has one)
                examples.append({"query": query, "item": it, "label": label, "group": f"q{q}"})
        return {"all": examples}

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        return {
            "query": torch.tensor(example["query"]),
            "item": torch.tensor(example["item"]),
            "label": torch.tensor(example["label"]),
            "group": torch.tensor(group_id(example["group"])),  # the query, as an integer
        }

    def decode(self, batch: dict[str, torch.Tensor], i: int) -> str:
        q = [round(v, 2) for v in batch["query"][i][:3].tolist()]
        it = [round(v, 2) for v in batch["item"][i][:3].tolist()]
        return f"query[:3]={q}... item[:3]={it}... relevant={int(batch['label'][i])}"

    def model_kwargs(self) -> dict:
        return {"n_features": self.toy.n_features}

    def fitted_state(self) -> dict:
        """What build() fitted on train, as plain data: saved with a full run, so that `repro
        predict` encodes new inputs as training did. Nothing here (the features are used as they
        are); TODO: the paper's vocabulary or statistics."""
        return {}

    def load_fitted_state(self, state: dict) -> None:
        """Restore fitted_state()'s values in place of load_examples() and build()."""

    def transformations(self) -> dict:
        """Transformations of a raw example that the paper's invariances (paper.invariances in
        conf/paper/{{paper}}.yaml) name. TODO: the paper's own."""
        return {"swap_query_item": swap_query_item}


def swap_query_item(example: dict) -> dict:
    """The item read as the query and the query as the item: relevance here is their dot
    product, which does not depend on the order."""
    return {**example, "query": example["item"], "item": example["query"]}


def build_datamodule(cfg: DataConfig, seed: int) -> ToyDataModule:
    """What repro calls: cfg is the typed `data:` section (this paper's keys in cfg.options)."""
    return ToyDataModule(cfg, seed)
