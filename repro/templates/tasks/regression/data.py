"""{{title_py}}: the data, as a LightningDataModule that repro's gates inspect.

TODO: replace the toy regression (a smooth function of 8 Gaussian features, plus noise) with the
paper's data. Return the official train/val/test split from load_examples when the dataset has
one; return {"all": [...]} and repro applies a seeded 80/10/10 split. Each example's "label" is
its target (a number, or a list of them). Fit whatever comes from the data in build() from
splits["train"] alone (here: the target's mean and standard deviation, so the model learns a
standardised target): the data gate builds again with val and test hidden and requires the same
result. A cache of preprocessing must be neither read nor written when self.bypass_cache is set.
A paper that caches sets self.loaded_from_cache (True: setup() read the cache, False: built
from the files); the data gate's comparison builds are then sampled where nothing was read.
"""

from __future__ import annotations

import math
import random
import statistics
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
    n_features: int = field(metadata={"ge": 2})
    noise: float = field(metadata={"ge": 0})


DATA_CONFIG = ToyData  # repro checks this paper's `data:` keys against it before a run starts


class ToyDataModule(PaperDataModule):
    num_classes = None  # a regression has no classes
    input_fields = ("x",)

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__(cfg, seed)
        self.toy = from_dict(ToyData, cfg.options, "data")  # a typo fails here, naming the key
        self.mean, self.std = 0.0, 1.0  # of the training targets, set by build()

    def load_examples(self) -> dict[str, list[dict]]:
        n, d, noise = self.toy.n_examples, self.toy.n_features, self.toy.noise
        rng = random.Random(1234)  # the dataset is fixed; the run's seed only affects the split
        w1 = [rng.gauss(0, 1 / math.sqrt(d)) for _ in range(d)]
        w2 = [rng.gauss(0, 1 / math.sqrt(d)) for _ in range(d)]
        examples = []
        for _ in range(n):
            x = [rng.gauss(0, 1) for _ in range(d)]
            a, b = sum(w * v for w, v in zip(w1, x)), sum(w * v for w, v in zip(w2, x))
            y = 50.0 + 20.0 * (math.sin(2 * a) + b) + 20.0 * noise * rng.gauss(0, 1)
            examples.append({"x": x, "label": y})  # a target in its own units (not standardised)
        return {"all": examples}

    def build(self, splits: dict[str, list[dict]]) -> None:
        """The target's statistics, from the training split alone."""
        ys = [ex["label"] for ex in splits["train"]]
        self.mean, self.std = statistics.fmean(ys), statistics.pstdev(ys) or 1.0

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        y = (example["label"] - self.mean) / self.std  # standardised with train's statistics
        return {"x": torch.tensor(example["x"]), "label": torch.tensor(y)}

    def decode(self, batch: dict[str, torch.Tensor], i: int) -> str:
        x = [round(v, 2) for v in batch["x"][i][:4].tolist()]
        y = float(batch["label"][i]) * self.std + self.mean
        return f"x[:4]={x}... target={y:.2f}"

    def model_kwargs(self) -> dict:
        return {"n_features": self.toy.n_features}

    def fitted_state(self) -> dict:
        """What build() fitted on train, as plain data: saved with a full run, so that `repro
        predict` standardises new inputs' targets and reads its outputs as training did."""
        return {"mean": self.mean, "std": self.std}

    def load_fitted_state(self, state: dict) -> None:
        """Restore fitted_state()'s values in place of load_examples() and build()."""
        self.mean, self.std = float(state["mean"]), float(state["std"])

    def present_prediction(self, prediction: dict, example: dict) -> dict:
        """The model predicts the standardised target: back in the target's own units."""
        return {"value": prediction["value"] * self.std + self.mean}


def build_datamodule(cfg: DataConfig, seed: int) -> ToyDataModule:
    """What repro calls: cfg is the typed `data:` section (this paper's keys in cfg.options)."""
    return ToyDataModule(cfg, seed)
