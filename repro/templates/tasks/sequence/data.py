"""{{title_py}}: the data, as a LightningDataModule that repro's gates inspect.

TODO: replace the toy text (short sentences from a small grammar) with the paper's corpus. This is
a character-level language model: each example is a sentence; encode() turns it into the
characters the model reads (`tokens`) and the next character to predict at every position
(`label`); collate() pads both, the labels with -100 (repro's sequence task ignores them). Fit
whatever comes from the data in build() from splits["train"] alone (here: the character
vocabulary): the data gate builds again with val and test hidden and requires the same result.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import torch

from repro.config.schema import DataConfig
from repro.config.typed import from_dict
from repro.data.datamodule import PaperDataModule
from repro.tasks.sequence import IGNORE_INDEX

PAD, UNK, BOS = 0, 1, 2  # ids: padding, a character train never had, the start of a sentence
SUBJECTS = "the cat|a dog|my aunt|the old man|a small bird|the teacher|her brother|a fox".split("|")
VERBS = "sees|likes|finds|draws|feeds|follows|hears|paints".split("|")
OBJECTS = "the moon|a red ball|the river|an apple|the garden|a letter|the city|two fish".split("|")
PLACES = "at night|in spring|by the sea|after lunch|every day|in the rain|with joy|".split("|")


@dataclass(frozen=True)
class ToyData:
    """This paper's own `data:` keys (repro's, such as batch_size, are in DataConfig); their
    values are in conf/paper/{{paper}}.yaml."""

    dataset: str
    n_examples: int = field(metadata={"ge": 3})


DATA_CONFIG = ToyData  # repro checks this paper's `data:` keys against it before a run starts


class ToyDataModule(PaperDataModule):
    input_fields = ("text",)

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__(cfg, seed)
        self.toy = from_dict(ToyData, cfg.options, "data")  # a typo fails here, naming the key
        self.chars: list[str] = []  # the vocabulary, from the training split (build)
        self.num_classes = None  # the vocabulary's size, once built

    def load_examples(self) -> dict[str, list[dict]]:
        rng = random.Random(1234)  # the corpus is fixed; the run's seed only affects the split
        every = [
            " ".join(w for w in (s, v, o, p) if w)
            for s in SUBJECTS
            for v in VERBS
            for o in OBJECTS
            for p in PLACES
        ]
        rng.shuffle(every)  # distinct sentences: no sentence can sit in two splits
        return {"all": [{"text": t} for t in every[: self.toy.n_examples]]}

    def build(self, splits: dict[str, list[dict]]) -> None:
        """The character vocabulary of the training split (sorted: the same ids in every run)."""
        counts = Counter(c for ex in splits["train"] for c in ex["text"])
        self.chars = sorted(counts)
        self.index = {c: i + 3 for i, c in enumerate(self.chars)}
        self.num_classes = len(self.chars) + 3

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        ids = [BOS] + [self.index.get(c, UNK) for c in example["text"]]
        return {"tokens": torch.tensor(ids[:-1]), "label": torch.tensor(ids[1:])}

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(it["tokens"]) for it in items)
        tokens = torch.full((len(items), longest), PAD)
        labels = torch.full((len(items), longest), IGNORE_INDEX)
        for i, it in enumerate(items):
            n = len(it["tokens"])
            tokens[i, :n], labels[i, :n] = it["tokens"], it["label"]
        return {"tokens": tokens, "label": labels}  # (B, T) each

    def decode(self, batch: dict[str, torch.Tensor], i: int) -> str:
        chars = ["", "?", ""] + self.chars
        ids = batch["tokens"][i].tolist() + [int(batch["label"][i][batch["label"][i] >= 0][-1])]
        return repr("".join(chars[t] for t in ids if t != PAD))

    def stats(self) -> dict:
        """Characters of val and test that train never had (the data gate judges oov_rate/*)."""
        out = {}
        for s in ("val", "test"):
            text = "".join(ex["text"] for ex in self.splits.get(s, []))
            out[f"oov_rate/{s}"] = sum(c not in self.index for c in text) / max(len(text), 1)
        return out

    def model_kwargs(self) -> dict:
        return {"vocab_size": self.num_classes}

    def fitted_state(self) -> dict:
        """What build() fitted on train, as plain data: saved with a full run, so that `repro
        predict` encodes new inputs with training's character ids."""
        return {"chars": self.chars}

    def load_fitted_state(self, state: dict) -> None:
        """Restore fitted_state()'s values in place of load_examples() and build()."""
        self.chars = list(state["chars"])
        self.index = {c: i + 3 for i, c in enumerate(self.chars)}
        self.num_classes = len(self.chars) + 3

    def present_prediction(self, prediction: dict, example: dict) -> dict:
        """The predicted next character at each position, as text."""
        chars = ["", "?", ""] + self.chars
        return {"text": "".join(chars[t] for t in prediction["predicted"]), **prediction}


def build_datamodule(cfg: DataConfig, seed: int) -> ToyDataModule:
    """What repro calls: cfg is the typed `data:` section (this paper's keys in cfg.options)."""
    return ToyDataModule(cfg, seed)
