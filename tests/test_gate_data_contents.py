"""The data gate's checks on what a datamodule kept, padded, looked up and shuffled (issue 22),
and the shapes gate's check that the model holds the loaded word vectors: each FAILs on the bug
it is for (BiMPM's sample with the bug planted) and passes on the healthy datamodule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from papers.bimpm.data import BiMPMDataModule
from papers.bimpm.sample import make_sample
from repro.config.schema import DataSizes
from repro.data.digest import sample_items
from repro.data.text import PAD_ID, UNK_ID, Vocab
from repro.gates.data_contents import (
    check_expected_sizes,
    check_read_counts,
    check_shuffled,
    content_checks,
    pad_inside,
    runs_p_value,
)
from repro.gates.shapes.vectors import check_loaded_vectors, loaded_vectors_check
from repro.train.init import apply_init
from tests.configs import data_config, stage_config

SAMPLE = Path(make_sample.__file__).resolve().parent
SIZES = [DataSizes("sample", 4000, 500, 500, "our sample")]


def _dm(cls=BiMPMDataModule, **options) -> BiMPMDataModule:
    cfg = {
        "dataset": "sample",
        "sample_dir": str(SAMPLE),
        "vectors": str(SAMPLE / "vectors.txt"),
        "word_dim": 50,
        "cache": False,  # each planted bug builds from the files
    }
    dm = cls(data_config(cfg | options), 0)
    dm.setup("fit")
    return dm


def _checks(dm) -> dict[str, object]:
    st = stage_config("data")
    items = sample_items(dm, st.sample_examples)
    return {c.name: c for c in content_checks(dm, items, st, SIZES, {"dataset": "sample"})}


@pytest.fixture(scope="module")
def healthy() -> BiMPMDataModule:
    return _dm()


def test_every_content_check_passes_measured_on_the_healthy_sample(healthy):
    checks = _checks(healthy)
    assert all(c.measured and c.passed for c in checks.values()), [
        c.reason for c in checks.values()
    ]
    assert checks["examples + skipped = read"].reason.startswith("train 4000 read = 4000 + 0")
    oov = checks["OOV rate"].evidence["values"]
    assert oov["train"] == 0.0 and 0.005 < oov["val"] < 0.02  # the ids' own count: val 0.00962
    assert healthy.stats()["oov_rate/val"] == pytest.approx(oov["val"])


# ---- a train split cut to 10% ----------------------------------------------------------------
class CutTrain(BiMPMDataModule):
    def load_examples(self):
        out = super().load_examples()
        out["train"] = out["train"][: len(out["train"]) // 10]  # the bug: a silent cut
        return out


def test_a_train_split_cut_to_a_tenth_fails_the_counts_and_the_stated_sizes():
    checks = _checks(_dm(CutTrain))
    counts = checks["examples + skipped = read"]
    assert counts.measured and not counts.passed
    assert "train: 400 examples + 0 skipped != 4000 read" in counts.reason
    sizes = checks["split sizes as stated"]
    assert not sizes.passed and "train has 400, paper.data_sizes states 4000" in sizes.reason


def test_a_declared_cut_is_counted_as_skipped_and_still_differs_from_the_stated_sizes():
    checks = _checks(_dm(limit=100))  # data.limit: a cut the config asks for
    counts = checks["examples + skipped = read"]
    assert counts.passed and "train 4000 read = 100 + 3900 skipped" in counts.reason
    assert "limit 4700" in counts.reason  # 3900 + 400 + 400 over the three splits
    assert not checks["split sizes as stated"].passed  # not the stated dataset


def test_read_counts_judgement():
    ok = check_read_counts({"train": {"read": 5, "skipped": {"blank": 2}}}, {"train": 3})
    assert ok.passed and "(skipped: blank 2)" in ok.reason
    assert not check_read_counts({"train": {"read": 5, "skipped": {}}}, {"train": 3}).passed
    pooled = check_read_counts(
        {"all": {"read": 10, "skipped": {}}}, {"train": 8, "val": 1, "test": 1}
    )
    assert pooled.passed  # repro's own 80/10/10 split: counted before splitting
    missing = check_read_counts(None, {"train": 3})
    assert not missing.measured and not missing.passed


def test_stated_sizes_only_where_the_paper_states_them():
    quora = DataSizes("quora", None, 10000, 10000, "Experiments")
    sizes = {"train": 384000, "val": 10000, "test": 10000}
    assert check_expected_sizes(sizes, quora, "quora").passed  # train: not stated, not compared
    short = check_expected_sizes({**sizes, "test": 9000}, quora, "quora")
    assert not short.passed and "test has 9000, paper.data_sizes states 10000" in short.reason
    none = check_expected_sizes(sizes, None, "snli")
    assert not none.measured and "dataset 'snli'" in none.reason


# ---- unknown words encoded as the pad id -----------------------------------------------------
class PadVocab(Vocab):
    def lookup(self, items):
        return [PAD_ID if i == UNK_ID else i for i in super().lookup(items)]  # the bug


class UnknownAsPad(BiMPMDataModule):
    def build(self, splits):
        super().build(splits)
        self.vocab = PadVocab(self.vocab.itos)


def test_unknown_words_encoded_as_padding_fail_and_are_still_counted_as_oov(healthy):
    dm = _dm(UnknownAsPad)
    assert dm.stats()["oov_rate/val"] == 0.0  # what the gate read before: the ids hide them
    checks = _checks(dm)
    ids = checks["tokens encoded as their ids"]
    assert ids.measured and not ids.passed
    assert (
        "tokens encoded as the pad id 0" in ids.reason
        and "-> 0 (its vocabulary id: 1)" in ids.reason
    )
    pad = checks["padding at the end of rows"]
    assert not pad.passed and "example #" in pad.reason and "_words" in pad.reason
    oov = checks["OOV rate"]  # counted from the tokens: the same rate as the healthy build's
    assert oov.evidence["values"] == _checks(healthy)["OOV rate"].evidence["values"]
    assert oov.evidence["values"]["val"] > 0


def test_pad_inside_a_row_on_either_side():
    right = torch.tensor([[5, 6, 0, 0], [5, 0, 6, 0], [0, 0, 0, 0]])
    assert pad_inside(right, "right").tolist() == [False, True, False]
    left = torch.tensor([[0, 0, 5, 6], [0, 5, 6, 0], [0, 5, 0, 6]])
    assert pad_inside(left, "left").tolist() == [False, True, True]
    chars = torch.tensor([[[3, 4, 0], [0, 0, 0]], [[3, 0, 4], [0, 0, 0]]])  # (B, T, K)
    assert pad_inside(chars, "right").tolist() == [False, True]


# ---- a train split sorted by label and not shuffled ------------------------------------------
class SortedTrain(BiMPMDataModule):
    def train_dataloader(self):
        ds = self.datasets["train"]
        order = sorted(range(len(ds)), key=lambda i: int(ds[i]["label"]))
        items = [ds[i] for i in order]
        return DataLoader(items, batch_size=32, shuffle=False, collate_fn=self.collate)


def test_a_train_loader_sorted_by_label_and_not_shuffled_fails():
    check = _checks(_dm(SortedTrain))["train loader shuffled"]
    assert check.measured and not check.passed
    assert "all have label 0" in check.reason and "not shuffled (sorted by label?)" in check.reason


def test_shuffle_judgement_on_label_sequences():
    counts = {0: 500, 1: 500}
    mixed = [i % 2 for i in range(200)]
    ok = check_shuffled(mixed, counts, 0.001, runs_p_value(mixed, 0.001))
    assert ok.passed  # alternating is many runs, not few
    blocks = [0] * 60 + [1] * 140  # sorted, but the first class is small: two runs
    p = runs_p_value(blocks, 0.001)
    assert p is not None and p < 0.001
    few = check_shuffled(blocks, counts, 0.001, p)
    assert not few.passed and "2 runs" in few.reason
    skewed = {0: 990, 1: 10}  # one label alone by chance: not evidence of sorting
    assert check_shuffled([0] * 20, skewed, 0.001, None).passed
    assert not check_shuffled(None, {}, 0.001, None, "regression").measured


# ---- word vectors re-initialised after loading (the shapes gate) -----------------------------
class Tiny(nn.Module):
    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.emb = nn.Embedding.from_pretrained(vectors, freeze=True, padding_idx=0)
        self.out = nn.Linear(vectors.shape[1], 2)

    def forward(self, x):
        return self.out(torch.relu(self.emb(x).mean(1)))


def test_vectors_kept_by_the_init_pass_and_re_initialised_ones_fail(healthy):
    vectors = healthy.model_kwargs()["word_vectors"]
    model = Tiny(vectors.clone())
    apply_init(model, "he_xavier")  # repro's init leaves a pretrained embedding alone
    ok = loaded_vectors_check(healthy, model, 1000)
    assert ok.passed and ok.reason.startswith("emb holds the loaded vectors (188 of 188")
    nn.init.normal_(model.emb.weight)  # the bug: re-initialised after loading, still frozen
    bad = loaded_vectors_check(healthy, model, 1000)
    assert bad.measured and not bad.passed
    assert "emb: 188 of 188 rows differ" in bad.reason and "replaced after loading" in bad.reason


def test_vectors_check_is_not_measured_without_loaded_vectors_or_an_embedding():
    class NoVectors:
        def loaded_vectors(self):
            return None

    c = loaded_vectors_check(NoVectors(), nn.Linear(2, 2), 1000)
    assert not c.measured and "loaded no vectors" in c.reason
    assert not check_loaded_vectors([], 5, 1000).measured


def test_bimpm_built_and_initialised_by_repro_keeps_its_glove_rows(healthy):
    import yaml

    from papers.bimpm.model import BiMPMConfig, build_model
    from repro.config.typed import from_dict

    conf = Path(__file__).resolve().parents[1] / "conf" / "paper" / "bimpm.yaml"
    small = {"hidden": 8, "agg_hidden": 8, "perspectives": 2, "char_hidden": 4, "mlp_hidden": 8}
    model_cfg = yaml.safe_load(conf.read_text())["model"] | small
    model = build_model(from_dict(BiMPMConfig, model_cfg, "model"), **healthy.model_kwargs())
    apply_init(model, "he_xavier")  # what ctx.build_model does after build_model
    check = loaded_vectors_check(healthy, model, 1000)
    assert check.passed and check.reason.startswith("word.word_emb holds the loaded vectors")
