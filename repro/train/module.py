"""ClassificationModule: the LightningModule that trains any paper's model with cross-entropy."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from repro.config.schema import OptimConfig, ScheduleConfig
from repro.data.batch import model_inputs


class ClassificationModule(pl.LightningModule):
    """Cross-entropy training with the configured optimizer and schedule; logs loss and accuracy (%).

    Validation and test metrics are exact over the whole split on any number of processes: each
    process sums loss, hits and examples over its own examples, the sums are added across
    processes, and only then divided (a mean of per-process means would weigh unequal shards
    wrongly, and a sampler that pads would count examples twice).
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        lr: float,
        seed: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.optim_cfg = optim
        self.schedule_cfg = schedule
        self.lr = lr  # the LR finder reads and varies this attribute
        self.seed = seed  # None: leave the global RNGs alone between epochs
        self._totals: dict[str, torch.Tensor] = {}

    # ---- exact resume -------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """At each epoch's first batch, reseed python/numpy/torch from (seed, epoch): like
        EpochSeededSampler's shuffle order, the dropout masks of epoch k then do not depend on how
        many random numbers earlier epochs, the sanity check or a resume drew, so a run resumed at
        epoch k trains exactly like one that was never interrupted. (Not on_train_epoch_start:
        Lightning 2.6.6 skips that hook for the first epoch after resuming from a checkpoint
        saved at validation end.)"""
        if self.seed is None or batch_idx != 0:
            return
        import random

        import numpy as np

        s = (self.seed * 1_000_003 + self.current_epoch) % 2**32
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the RNG states with the weights (plain lists: loadable with weights_only=True)."""
        import random

        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["repro_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("repro_rng")
        if not state:
            return
        import random

        import numpy as np

        torch.set_rng_state(state["torch"])
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))

    # ---- steps --------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**model_inputs(batch))

    def training_step(self, batch, batch_idx):
        logits = self(batch)  # (B, C)
        y = batch["label"]
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean() * 100
        n = len(y)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=True,
        )
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], split: str) -> None:
        logits = self(batch)  # (B, C)
        y = batch["label"]
        sums = torch.stack(
            [
                F.cross_entropy(logits.double(), y, reduction="sum"),
                (logits.argmax(-1) == y).sum().double(),
                torch.tensor(float(len(y)), dtype=torch.float64, device=logits.device),
            ]
        )  # (3,): loss sum, hits, examples
        self._totals[split] = self._totals.get(split, 0) + sums

    def _log_totals(self, split: str) -> None:
        totals = self._totals.pop(split, None)
        if totals is None:  # this process had no examples of the split
            totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")  # over processes
        loss_sum, hits, n = (float(v) for v in totals)
        if n == 0:
            return
        self.log(f"{split}/loss", loss_sum / n, prog_bar=True)
        self.log(f"{split}/acc", 100.0 * hits / n, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_totals("val")

    def on_test_epoch_end(self) -> None:
        self._log_totals("test")

    # ---- optimizer ----------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = self.optim_cfg
        if o.name == "sgd":
            opt = torch.optim.SGD(
                params, lr=self.lr, weight_decay=o.weight_decay, momentum=o.momentum
            )
        else:
            cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
            opt = cls(params, lr=self.lr, weight_decay=o.weight_decay, betas=o.betas)
        if self.schedule_cfg.name == "constant":
            return opt
        # total_steps from Lightning: a hand-computed count fails with "Tried to step N times" (design.md)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
