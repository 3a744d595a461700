"""Python's cyclic collector is paused while a datamodule sets up (repro/data/collector.py): the
base setup() and a paper's own override alike, back on after (also after an error), collected
once; nested inside the data gate's pause it stays off and nothing is collected."""

from __future__ import annotations

import gc
import sys

import pytest
import torch

from repro.config.schema import DataConfig
from repro.data.collector import collector_paused
from repro.data.datamodule import PaperDataModule

CFG = DataConfig(
    batch_size=4, eval_batch_size=None, num_workers=0, split=(0.8, 0.1, 0.1), split_seed=0
)


class Toy(PaperDataModule):
    """Records whether the collector was on while it loaded and built."""

    def __init__(self, cfg, seed, fail: bool = False):
        super().__init__(cfg, seed)
        self.enabled_in: dict[str, bool] = {}
        self.fail = fail

    def load_examples(self):
        self.enabled_in["load"] = gc.isenabled()
        return {"all": [{"x": [float(i)], "label": i % 2} for i in range(40)]}

    def build(self, splits):
        self.enabled_in["build"] = gc.isenabled()
        if self.fail:
            raise ValueError("a broken build")

    def encode(self, ex):
        return {"x": torch.tensor(ex["x"]), "label": torch.tensor(ex["label"])}


class CachingToy(Toy):
    """A paper's own setup() (as one that caches its preprocessing writes it)."""

    def setup(self, stage=None):
        self.enabled_in["own setup"] = gc.isenabled()
        super().setup(stage)
        self.enabled_in["after base setup"] = gc.isenabled()


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.parametrize("cls", [Toy, CachingToy])
def test_setup_runs_with_the_collector_paused_and_turns_it_back_on(cls, collector_on):
    dm = cls(CFG, 0)
    dm.setup("fit")
    assert dm.enabled_in and not any(dm.enabled_in.values()), dm.enabled_in
    assert gc.isenabled()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [32, 4, 4]


def test_setup_collects_once_after(collector_on, monkeypatch):
    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    CachingToy(CFG, 0).setup("fit")  # its own setup() around the base's: still one collection
    assert calls == [()]


def test_a_failing_setup_turns_the_collector_back_on(collector_on):
    with pytest.raises(ValueError, match="a broken build"):
        Toy(CFG, 0, fail=True).setup("fit")
    assert gc.isenabled()


def test_inside_the_gates_pause_setup_leaves_it_off_and_collects_nothing(collector_on, monkeypatch):
    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    with collector_paused():
        dm = CachingToy(CFG, 0)
        dm.setup("fit")
        dm2 = Toy(CFG, 0)
        dm2.setup_train_only()
        assert not gc.isenabled()
    assert gc.isenabled() and calls == []
    assert not any(dm.enabled_in.values()) and not any(dm2.enabled_in.values())


def test_a_paused_build_gives_the_same_data_as_one_with_the_collector_on(collector_on):
    """The pause changes when memory is reclaimed, nothing built."""
    paused = Toy(CFG, 0)
    paused.setup("fit")
    on = Toy(CFG, 0)
    on._load_and_split()  # the base's steps, unwrapped, with the collector on
    on.build(on.splits)
    on.datasets = {s: on.encode_split(s, on.splits[s]) for s in ("train", "val", "test")}
    assert on.enabled_in == {"load": True, "build": True}
    assert paused.splits == on.splits
    for name in ("x", "label"):
        assert torch.equal(paused.fixed_batch()[name], on.fixed_batch()[name])


def test_a_dropped_build_is_collected_only_while_a_cycle_keeps_it(monkeypatch):
    import weakref

    from repro.data.rebuild import collect_if_alive

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    with collector_paused():
        freed = Toy(CFG, 0)
        ref = weakref.ref(freed)
        del freed  # nothing else holds it: reference counting frees it
        collect_if_alive(ref)
        assert calls == []
        held = Toy(CFG, 0)
        held.me = held  # a cycle: only a collection frees it
        ref = weakref.ref(held)
        del held
        collect_if_alive(ref)
        assert calls == [()]


def test_lazy_items_fetched_together_are_those_fetched_one_by_one():
    from repro.data.rebuild import LazySplit, items_at

    examples = [{"x": [float(i)], "label": i % 2} for i in range(10)]
    calls = []

    def encode_split(name, exs):
        calls.append(len(exs))
        return [{"x": torch.tensor(ex["x"]), "label": torch.tensor(ex["label"])} for ex in exs]

    one_by_one = LazySplit(encode_split, "train", examples)
    together = LazySplit(encode_split, "train", examples)
    expected = [one_by_one[i] for i in (7, 2, 2, 5)]
    calls.clear()
    assert together[2]["x"].item() == 2.0  # read before: not encoded again
    got = items_at(together, [7, 2, 2, 5])
    assert calls == [1, 2]  # one call for 7 and 5 together
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(expected, got, strict=True))
    assert items_at(examples, [1, 3]) == [examples[1], examples[3]]  # any other dataset: ds[i]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; glibc's malloc")
def test_freed_heap_memory_goes_back_to_the_system():
    """What a dropped build frees in the middle of the heap stays with the process (glibc keeps
    it for later allocations) until return_freed_memory hands it back: the data gate calls it
    before its fresh process builds, so the two processes' memory does not add up."""
    from repro.data import rebuild
    from repro.dev.worker import rss_mb

    if rebuild._TRIM is None:
        pytest.skip("this C library has no malloc_trim")
    blocks = [bytes(1000) for _ in range(100_000)]  # ~100 MB of heap (over pymalloc's 512 B)
    pinned = blocks[::100]  # a few survivors: the heap's top cannot shrink past them
    del blocks
    before = rss_mb()
    assert rebuild.return_freed_memory() is True
    assert before - rss_mb() > 50, "the freed blocks' pages were not handed back"
    assert len(pinned) == 1000


def test_return_freed_memory_is_a_no_op_without_malloc_trim(monkeypatch):
    from repro.data import rebuild

    monkeypatch.setattr(rebuild, "_TRIM", None)
    assert rebuild.return_freed_memory() is False
