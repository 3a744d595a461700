"""Training shared by every paper: seeding, default init, the LightningModule, LR finder and fit.

Nothing here imports the gate context: `fit_and_test` takes a typed config, a datamodule and a
model and returns a FitResult.
"""
