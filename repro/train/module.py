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

    def __init__(self, model: nn.Module, optim: dict[str, Any], schedule: dict[str, Any], lr: float | None):
        super().__init__()
        self.model = model
        self.optim_cfg = dict(optim)
        self.schedule_cfg = dict(schedule)
        self.lr = lr if lr is not None else 1e-3  # the LR finder writes its suggestion here

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**model_inputs(batch))

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch)  # (B, C)
        y = batch["label"]
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean() * 100
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True, prog_bar=split != "train", batch_size=len(y))
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
            opt = torch.optim.SGD(params, lr=self.lr, weight_decay=wd, momentum=float(self.optim_cfg.get("momentum", 0.9)))
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
