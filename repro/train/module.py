"""ClassificationModule: the LightningModule that trains any paper's model with cross-entropy."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "label"}


class ClassificationModule(pl.LightningModule):
    """Cross-entropy training with the configured optimizer and schedule; logs loss and accuracy (%)."""

    def __init__(
        self,
        model: nn.Module,
        optim: dict[str, Any],
        schedule: dict[str, Any],
        lr: float | None,
        seed: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.optim_cfg = dict(optim)
        self.schedule_cfg = dict(schedule)
        self.lr = lr if lr is not None else 1e-3  # the LR finder writes its suggestion here
        self.seed = seed  # None: leave the global RNGs alone between epochs

    # ---- exact resume (issue #4) -----------------------------------------------------------
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

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**model_inputs(batch))

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch)  # (B, C)
        y = batch["label"]
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean() * 100
        on_step = split == "train"
        self.log(
            f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(y)
        )
        self.log(
            f"{split}/acc",
            acc,
            on_step=False,
            on_epoch=True,
            prog_bar=split != "train",
            batch_size=len(y),
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        name = self.optim_cfg.get("name", "adamw")
        wd = float(self.optim_cfg.get("weight_decay") or 0.0)
        betas = tuple(self.optim_cfg.get("betas") or (0.9, 0.999))
        if name == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=wd, betas=betas)
        elif name == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=wd, betas=betas)
        elif name == "sgd":
            opt = torch.optim.SGD(
                params,
                lr=self.lr,
                weight_decay=wd,
                momentum=float(self.optim_cfg.get("momentum", 0.9)),
            )
        else:
            raise ValueError(f"optim.name '{name}' unknown; valid: adamw, adam, sgd")
        schedule = self.schedule_cfg.get("name", "onecycle")
        if schedule == "constant":
            return opt
        if schedule == "onecycle":
            # total_steps from Lightning: a hand-computed count fails with "Tried to step N times" (design.md)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=self.lr, total_steps=int(self.trainer.estimated_stepping_batches)
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        raise ValueError(f"schedule.name '{schedule}' unknown; valid: onecycle, constant")
