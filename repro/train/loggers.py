"""Where training curves go: metrics.csv always, and Weights & Biases when logger=wandb."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def csv_logger(out_dir: Path, flush_every: int):
    from pytorch_lightning.loggers import CSVLogger

    # flushed as often as rows are logged: rows written before a kill survive for --resume
    return CSVLogger(
        save_dir=str(out_dir), name="", version="", flush_logs_every_n_steps=flush_every
    )


def wandb_logged_in() -> bool:
    """What wandb itself says: an API key from WANDB_API_KEY, its settings or ~/.netrc *for the
    W&B host* (any other ~/.netrc entry does not count). Never prompts, never contacts a server,
    and changes no state of the wandb library (wandb.login would keep what it found)."""
    import wandb

    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib.wbauth import authenticate_session

        host = wandb_setup.singleton().settings.base_url
        found = authenticate_session(host=host, source="repro", prompt=False, update_session=False)
        return found is not None
    except ImportError:  # another wandb version: its public check (it may keep the credentials)
        return bool(wandb.login(prompt=False, verify=False))
    except Exception:  # wandb raises UsageError and friends when it cannot tell: offline, then
        return False


class WandbRun:
    """One W&B run per repro run: named by the run id, holding the resolved config with each
    value's provenance, the seeds' curves (prefixed seed<N>/) and, at the end, the verdict."""

    def __init__(
        self,
        run_id: str,
        project: str,
        out_dir: Path,
        config: dict[str, Any],
        provenance: dict[str, str],
        tags: list[str],
    ):
        import wandb

        self.online = wandb_logged_in()
        self.run = wandb.init(
            project=project,
            name=run_id,
            id=run_id,
            dir=str(out_dir),
            mode="online" if self.online else "offline",
            config={"config": config, "provenance": provenance},
            tags=tags,
            reinit="finish_previous",
        )

    def logger(self, prefix: str):
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(experiment=self.run, prefix=prefix)

    def finish(self, status: str, verdict: dict[str, Any] | None) -> None:
        """Record the outcome in the run's summary and close it (wandb warns about abandoned runs)."""
        self.run.summary["status"] = status
        if verdict:
            self.run.summary["passed"] = bool(verdict.get("passed"))
            self.run.summary["reason"] = verdict.get("reason", "")
        self.run.finish(exit_code=0 if status == "passed" else 1)
