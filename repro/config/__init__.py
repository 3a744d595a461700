"""The run config: composed from conf/ by Hydra, typed by repro.config.schema, tagged with provenance."""

from repro.config.compose import GATE_SECTIONS, Resolved, compose, flatten, kind_of

__all__ = ["GATE_SECTIONS", "Resolved", "compose", "flatten", "kind_of"]
