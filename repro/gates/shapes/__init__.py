"""The shapes gate: a real and a dummy batch through the model, measured, then judged.

    measure.py   measurements: run the model, return numbers (restoring its modes and grads)
    alone.py     each example alone vs inside its padded batch, in a thread beside the rest
    judge.py     judgements: small pure functions from those numbers to a Check
    gate.py      the orchestration: run(ctx), run_shapes(model, batch, task, ...) -> Verdict

What it judges: the output fits the paper's task (repro/tasks: logits (B, C) for a classifier,
(B, T, V) per position, a value or a score per example); the loss at init vs what the task
expects (ln C, ln V, mean(y²) ...); outputs that are logits, not probabilities, where the loss
applies a softmax; a gradient to every trainable parameter; no gradient from one example's loss
to another's input; two eval forwards identical (nothing random at eval); each example's output
alone, trimmed to its own length, equal to its output inside the padded batch (padding masked,
examples not mixed); frozen parameters named (and failed outside embeddings unless declared);
zeroed inputs change the output; an odd batch size works; everything finite; the parameter count
(issue 13 for the checks that came from its bug zoo). Issue 22's meaning bugs: a build under the
next seed differs (the seed reaches the model); gradient values against float64 central
differences (a stop-gradient on one of two paths); no log-probabilities where the loss applies
log-softmax, and a finite loss and gradients when the output layer is made confident.

A batch is a dict of tensors with "label" (and "group" for ranking); the other keys are the
model's keyword arguments (repro/data/batch.py). Integer inputs use id 0 for padding and 1 for
"unknown".
"""

from repro.gates.shapes.alone import (
    AloneError,
    AloneRows,
    measure_alone_vs_batch,
    row_gap,
    start_alone_vs_batch,
)
from repro.gates.shapes.gate import STAGE, run, run_shapes
from repro.gates.shapes.judge import (
    check_alone_vs_batch,
    check_batch_independence,
    check_confidence_stress,
    check_dummy_batch,
    check_eval_repeat,
    check_finite,
    check_frozen,
    check_grad_flow,
    check_grad_values,
    check_init_loss,
    check_logits,
    check_output_shape,
    check_param_count,
    check_seed_reaches_model,
    check_zero_input,
    probability_floor,
    roundoff_tol,
)
from repro.gates.shapes.measure import (
    Float64Refused,
    last_layer_called,
    make_dummy_batch,
    measure_batch_independence,
    measure_confidence_stress,
    measure_dummy_batch,
    measure_eval_repeat,
    measure_forward,
    measure_frozen,
    measure_grad_flow,
    measure_grad_values,
    measure_output_range,
    measure_seed_effect,
    measure_zero_input,
    one_thread,
    parameter_groups,
    preserved,
    torch_threads,
    trim_padding,
    zeroed_batch,
)

__all__ = [
    "STAGE",
    "AloneError",
    "AloneRows",
    "Float64Refused",
    "check_alone_vs_batch",
    "check_batch_independence",
    "check_confidence_stress",
    "check_dummy_batch",
    "check_eval_repeat",
    "check_finite",
    "check_frozen",
    "check_grad_flow",
    "check_grad_values",
    "check_init_loss",
    "check_logits",
    "check_output_shape",
    "check_param_count",
    "check_seed_reaches_model",
    "check_zero_input",
    "last_layer_called",
    "make_dummy_batch",
    "measure_alone_vs_batch",
    "measure_batch_independence",
    "measure_confidence_stress",
    "measure_dummy_batch",
    "measure_eval_repeat",
    "measure_forward",
    "measure_frozen",
    "measure_grad_flow",
    "measure_grad_values",
    "measure_output_range",
    "measure_seed_effect",
    "measure_zero_input",
    "one_thread",
    "parameter_groups",
    "preserved",
    "probability_floor",
    "roundoff_tol",
    "row_gap",
    "run",
    "run_shapes",
    "start_alone_vs_batch",
    "torch_threads",
    "trim_padding",
    "zeroed_batch",
]
