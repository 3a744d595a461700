"""The run config: composed from conf/ (compose.py: Hydra, or the plain path proven equal to it),
typed by schema.py through typed.py, tagged with provenance, upgraded for an older project's
conf/ (upgrade.py). Import from the modules: this package imports nothing, so that the record
type (which uses typed.py) reads records without loading YAML or Hydra."""
