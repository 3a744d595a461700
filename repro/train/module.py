"""TaskModule: the LightningModule that trains any paper's model with its task's loss and metrics."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from repro.config.schema import OptimConfig, ScheduleConfig
from repro.data.batch import model_inputs
from repro.tasks.base import Task

# The test phase keeps its raw outputs up to this many numbers (64 MB of float32; a classifier's
# 10,000 test examples take 20,000); a larger test phase (a language model's (B, T, V)) keeps none.
KEEP_TEST_OUTPUTS = 2**24


class TaskModule(pl.LightningModule):
    """Training with the task's loss and the configured optimizer and schedule; logs the task's
    metrics on val and test (repro.tasks: accuracy and F1, MSE and R², perplexity, MAP ...).

    Validation and test metrics are exact over the whole split on any number of processes: each
    process sums the loss and its units over its own examples and feeds its torchmetrics; the
    sums are added across processes (torchmetrics gathers its own states) and only then divided
    (a mean of per-process means would weigh unequal shards wrongly, and a sampler that pads would
    count examples twice).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        lr: float,
        seed: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.task = task
        self.optim_cfg = optim
        self.schedule_cfg = schedule
        self.lr = lr  # the LR finder reads and varies this attribute
        self.seed = seed  # None: leave the global RNGs alone between epochs
        self._totals: dict[str, torch.Tensor] = {}
        # The test phase's raw outputs, batch by batch (None: more than KEEP_TEST_OUTPUTS numbers)
        self.test_outputs: list[torch.Tensor] | None = []
        self._kept = 0
        # torchmetrics per split, as submodules (they follow the model's device); their states
        # are not persistent, so checkpoints hold the model and the RNG states only
        self.split_metrics = nn.ModuleDict(
            {s: nn.ModuleDict(task.make_metrics()) for s in ("val", "test")}
        )

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
        out = self(batch)
        loss = self.task.loss(out, batch)
        n = len(batch["label"])
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=True,
        )
        with torch.no_grad():
            for name, value in self.task.step_metrics(out.detach(), batch).items():
                self.log(
                    f"train/{name}",
                    value,
                    on_step=False,
                    on_epoch=True,
                    batch_size=n,
                    sync_dist=True,
                )
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        out = self(batch)
        loss_sum, units = self.task.loss_sum(out, batch)
        sums = torch.stack([loss_sum, units])  # (2,): the loss summed over units, units
        self._totals[split] = self._totals.get(split, 0) + sums
        self.task.update_metrics(dict(self.split_metrics[split].items()), out, batch)
        return out

    def _log_totals(self, split: str) -> None:
        totals = self._totals.pop(split, None)
        if totals is None:  # this process had no examples of the split
            totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")  # over processes
        loss_sum, n = (float(v) for v in totals)
        metrics = self.split_metrics[split]
        if n == 0:
            for m in metrics.values():
                m.reset()
            return
        computed = {name: float(m.compute()) for name, m in metrics.items()}
        for m in metrics.values():
            m.reset()
        for name, value in self.task.finish_metrics(computed, loss_sum / n).items():
            self.log(f"{split}/{name}", value, prog_bar=name in ("loss", self.task.primary))

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        out = self._eval_step(batch, "test")
        if self.test_outputs is None:  # what `repro predict` is compared with (fit.py)
            return
        self._kept += out.numel()
        if self._kept > KEEP_TEST_OUTPUTS:
            self.test_outputs = None
        else:
            self.test_outputs.append(out.detach().float().cpu())

    def on_test_epoch_start(self) -> None:
        self.test_outputs, self._kept = [], 0

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
