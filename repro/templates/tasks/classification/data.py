"""{{title_py}}: the data, as a LightningDataModule that repro's gates inspect.

TODO: replace the toy Gaussian-cluster dataset with the paper's. Return the official
train/val/test split from load_examples when the dataset has one; return {"all": [...]} and
repro applies a seeded, stratified 80/10/10 split. Fit whatever comes from the data (a
vocabulary, normalisation statistics) in build() from splits["train"] alone: the data gate builds
again with val and test hidden and requires the same result. A cache of preprocessing must be
neither read nor written when self.bypass_cache is set.
A paper that caches sets self.loaded_from_cache (True: setup() read the cache, False: built
from the files); the data gate's comparison builds are then sampled where nothing was read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from repro.config.schema import DataConfig
from repro.config.typed import from_dict
from repro.data.datamodule import PaperDataModule


@dataclass(frozen=True)
class ToyData:
    """This paper's own `data:` keys (repro's, such as batch_size, are in DataConfig); their
    values are in conf/paper/{{paper}}.yaml."""

    dataset: str
    n_examples: int = field(metadata={"ge": 3})
    n_features: int = field(metadata={"ge": 1})
    noise: float = field(metadata={"ge": 0})


DATA_CONFIG = ToyData  # repro checks this paper's `data:` keys against it before a run starts


class ToyDataModule(PaperDataModule):
    num_classes = 3
    class_names = ["a", "b", "c"]
    input_fields = ("x",)

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__(cfg, seed)
        self.toy = from_dict(ToyData, cfg.options, "data")  # a typo fails here, naming the key

    def load_examples(self) -> dict[str, list[dict]]:
        n, d, noise = self.toy.n_examples, self.toy.n_features, self.toy.noise
        rng = random.Random(1234)  # the dataset is fixed; the run's seed only affects the split
        centers = [[rng.gauss(0, 1.0) for _ in range(d)] for _ in range(self.num_classes)]
        examples = []
        for i in range(n):
            y = i % self.num_classes
            x = [c + rng.gauss(0, noise) for c in centers[y]]
            # scale to roughly unit variance: unscaled inputs give an overconfident init (the
            # shapes gate's loss-at-init check catches it)
            examples.append({"x": [v / (1 + noise) for v in x], "label": y})
        return {"all": examples}

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor(example["x"]), "label": torch.tensor(example["label"])}

    def decode(self, batch: dict[str, torch.Tensor], i: int) -> str:
        x = batch["x"][i]
        return f"x[:4]={[round(v, 2) for v in x[:4].tolist()]}... label={self.class_names[int(batch['label'][i])]}"

    def model_kwargs(self) -> dict:
        return {"n_features": self.toy.n_features, "num_classes": self.num_classes}

    def fitted_state(self) -> dict:
        """What build() fitted on train, as plain data: saved with a full run, so that `repro
        predict` encodes new inputs as training did. Nothing here (the features are used as they
        are); TODO: the paper's vocabulary or statistics."""
        return {}

    def load_fitted_state(self, state: dict) -> None:
        """Restore fitted_state()'s values in place of load_examples() and build()."""

    def transformations(self) -> dict:
        """Transformations of a raw example that the paper's invariances (paper.invariances in
        conf/paper/{{paper}}.yaml) name. TODO: the paper's own (a flip, a paraphrase ...)."""
        return {"nudge": nudge}


def nudge(example: dict) -> dict:
    """The example moved by 0.01 along each feature (alternating signs): far less than the
    clusters' spread, so the class should not change."""
    return {**example, "x": [v + (0.01 if i % 2 else -0.01) for i, v in enumerate(example["x"])]}


def build_datamodule(cfg: DataConfig, seed: int) -> ToyDataModule:
    """What repro calls: cfg is the typed `data:` section (this paper's keys in cfg.options)."""
    return ToyDataModule(cfg, seed)
