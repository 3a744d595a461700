"""The shapes gate's judgements: small pure functions from measured numbers to a Check."""

from __future__ import annotations

import math
from typing import Any

import torch

from repro.gates.shapes.measure import grad_mismatch
from repro.tasks.base import InitLoss
from repro.verdict import Check

_SHOW = 5  # how many parameter names a reason lists before "... and N more"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def check_output_shape(shape: tuple[int, ...] | None, problem: str | None, task: str) -> Check:
    """The model's output fits the task (`problem`: what is wrong with it, None when it fits)."""
    ev = {"shape": list(shape) if shape is not None else None, "task": task}
    if problem is not None:
        return Check("output_shape", False, f"{problem} ({task} task)", ev)
    return Check("output_shape", True, f"output shape {tuple(shape)} fits the {task} task", ev)


def check_init_loss(
    loss: float,
    expected: InitLoss | None,
    rel_tol: float,
    spread: float | None = None,
    output_layer: str | None = None,
) -> Check:
    """At init a model should be unsure: its loss near what the task expects (ln C for a
    classifier, mean(y²) for a regressor whose outputs start near 0 ...), within rel_tol times
    the expectation's scale. No expectation (a paper's own task states none): not measured.

    spread: the mean standard deviation of a row's logits (how confident the model starts);
    output_layer: the layer repro's init started small ("" when repro's init found none, None
    when unknown), so the reason can say what to change."""
    if expected is None:
        return Check.not_measured(
            "init_loss", f"the task states no loss expected at init (loss {loss:.4g})"
        )
    value, tol = expected.value, rel_tol * expected.scale
    gap = abs(loss - value)
    ok = gap <= tol  # False for NaN
    reason = (
        f"loss at init {loss:.4g} vs {expected.label} = {value:.4g} ({expected.why}): "
        f"|gap| {gap:.4g} {'<=' if ok else '>'} tol {tol:.4g} ({rel_tol:g} x {expected.label})"
    )
    if not ok and loss > value:
        reason += _init_too_confident(spread, output_layer)
    elif not ok and loss < value:
        reason += (
            f": below {expected.label}, the model knows the labels before training: a label "
            "leaked into the inputs, or the outputs and labels do not make the task's loss"
        )
    ev = {"loss": loss, "expected": value, "tol": tol, "spread": spread, "label": expected.label}
    return Check("init_loss", ok, reason, ev)


def _init_too_confident(spread: float | None, output_layer: str | None) -> str:
    """Why a loss at init far above the expectation, and what to change (Karpathy's Recipe: init
    well)."""
    why = ": the initial outputs are large"
    why += f" (each row's logits spread by {spread:.3g} on average)" if spread is not None else ""
    why += ", so the model is confidently wrong before it has learnt anything; "
    if output_layer:
        return why + (
            f"repro's init started the output layer {output_layer} small (Xavier x 0.1), so what "
            "feeds it is large (un-normalised inputs? a missing normalisation?), or the output "
            "layer is another one: mark that one with init_nonlinearity = 'output'"
        )
    return why + (
        "start the output layer small (repro's he_xavier init does it for the last "
        "Linear/Conv, or the one marked init_nonlinearity = 'output') or scale the logits down"
    )


def roundoff_tol(dtype: str, scale: float, eps_units: float) -> float:
    """What rounding alone can explain between two computations of logits of size `scale`:
    eps_units machine epsilons of `dtype`, times (1 + scale)."""
    return eps_units * torch.finfo(getattr(torch, dtype)).eps * (1.0 + scale)


def check_eval_repeat(max_change: float, tol: float) -> Check:
    """Two eval-mode forwards of one batch must agree to rounding: nothing random at eval."""
    ok = max_change <= tol  # False for NaN
    return Check(
        "eval_deterministic",
        ok,
        f"two eval-mode forwards of the same batch differ by {max_change:.3g} "
        f"{'<=' if ok else '>'} {tol:.2g}"
        + (
            ""
            if ok
            else ": something random stays on in eval mode (dropout called with training=True or "
            "without self.training, a noise layer): evaluation would not be reproducible"
        ),
        {"max_change": max_change, "tol": tol},
    )


def check_alone_vs_batch(m: dict[str, Any], eps_units: float) -> Check:
    """An example's logits alone (trimmed to its own length) must equal its logits inside the
    padded batch, to rounding (roundoff_tol in the measured dtype); a failure names the cause:
    its batch-mates (batch_gap) or the padding they make it carry (pad_gap)."""
    tol = roundoff_tol(m["dtype"], m["scale"], eps_units)
    keys = ("gap", "row", "batch_gap", "pad_gap", "padded_rows", "trim_error", "rows")
    ev = {k: m.get(k) for k in keys} | {"tol": tol, "dtype": m["dtype"]}
    where = f"({m['dtype']}{'; ' + m['note'] if m['note'] else ''})"
    if m["gap"] <= tol:
        padded = f"{m['padded_rows']} of them padded in the batch"
        reason = (
            f"{len(m['rows'])} examples alone, trimmed to their own length ({padded}), vs inside "
            f"the batch: max |Δlogits| {m['gap']:.2g} <= {tol:.2g} {where}"
        )
        if m["trim_error"]:
            reason += f"; trimming raised {m['trim_error']}, so padding was not tested"
        elif not m["padded_rows"]:
            reason += ": padding was not tested"
        return Check("alone_vs_batch", True, reason, ev)
    if not m["batch_gap"] <= tol:
        reason = (
            f"example {m['row']}'s logits alone (a batch of 1) differ from inside the batch by "
            f"{m['batch_gap']:.3g} > {tol:.2g} {where}: its output depends on its batch-mates, "
            "though nothing should mix examples in eval mode (statistics over the batch? a "
            "reshape or mean across dim 0?)"
        )
    else:
        reason = (
            f"example {m['row']} trimmed to its own length ({m.get('pad_lengths')}) gives logits "
            f"{m['pad_gap']:.3g} away from the same example padded as in its batch (> {tol:.2g} "
            f"{where}): its output depends on its batch-mates' padding, so padding is not masked: "
            "an LSTM/GRU run over the pads (lengths ignored: pack the sequence or take the state "
            "at each row's length), or a max/mean/attention over padded positions (mask them)"
        )
    return Check("alone_vs_batch", False, reason, ev)


_FIXED_OK = ("Embedding", "EmbeddingBag")  # fixed (pretrained) vectors are common and intended


def check_frozen(frozen: list[dict[str, Any]], allowed: list[str]) -> Check:
    """Frozen parameters are named. Frozen embeddings pass (fixed pretrained vectors, e.g. BiMPM's
    word vectors, are common and intended) and so do names matching stage.shapes.frozen_ok; any
    other frozen parameter fails: no gradient check can see it, and a layer frozen by mistake
    (a leftover requires_grad_(False), a loaded backbone left frozen) silently trains less."""
    from fnmatch import fnmatchcase

    def fixed(f: dict[str, Any]) -> bool:
        return f["module"] in _FIXED_OK or any(fnmatchcase(f["name"], a) for a in allowed)

    def show(fs: list[dict[str, Any]]) -> str:
        return _names([f"{f['name']} ({f['module']}, {f['numel']:,})" for f in fs])

    bad = [f for f in frozen if not fixed(f)]
    ev = {"frozen": [f["name"] for f in frozen], "unexpected": [f["name"] for f in bad]}
    if bad:
        reason = (
            f"{len(bad)} frozen parameters (requires_grad False: never trained) that are not "
            f"embeddings: {show(bad)}; if the paper fixes them, list them in stage.shapes."
            "frozen_ok, else make them trainable (requires_grad_(True))"
        )
        return Check("frozen_params", False, reason, ev)
    if not frozen:
        return Check("frozen_params", True, "no frozen parameters", ev)
    reason = (
        f"frozen, never trained: {show(frozen)}; intended only if the paper fixes them "
        "(nn.Embedding.from_pretrained freezes unless freeze=False)"
    )
    return Check("frozen_params", True, reason, ev)


def probability_floor(num_classes: int) -> float:
    """The lowest cross-entropy that outputs in [0, 1] fed as logits can reach: one-hot
    probabilities, -ln(e / (e + C - 1)) (0.5514 for C = 3, 0.3133 for C = 2)."""
    return -math.log(math.e / (math.e + num_classes - 1))


def check_logits(out: dict[str, float], num_classes: int, tol: float) -> Check:
    """Cross-entropy expects logits: outputs in [0, 1] whose rows sum to 1 are probabilities;
    outputs <= 0 whose rows have a logsumexp of 0 are log-probabilities (issue 22: a model
    returning log(softmax(x)), all in [-0.71, -0.68] at init, passed as logits).

    Only rows summing to 1 are judged: outputs merely inside [0, 1] can be a correct model's at
    init (measured: BiMPM's small-init logits all lay in [-0.073, -0.0001], nearly the same for
    every example), so a sigmoid is left to the overfit gate, which sees the loss floor."""
    lo, hi, sum_gap = out["min"], out["max"], out["row_sum_gap"]
    lse_gap = out.get("logsumexp_gap", math.inf)  # absent from records before it was measured
    probabilities = lo >= -tol and hi <= 1 + tol and sum_gap <= tol
    log_probabilities = hi <= tol and lse_gap <= tol
    if probabilities:
        reason = (
            f"every output lies in [{lo:.3g}, {hi:.3g}] and each row sums to 1 (max |sum - 1| "
            f"{sum_gap:.2g}): the model outputs probabilities; cross-entropy expects logits (it "
            "applies log-softmax itself): drop the softmax (training would stall at the "
            f"cross-entropy floor of probabilities, {probability_floor(num_classes):.4f})"
        )
    elif log_probabilities:
        reason = (
            f"every output lies in [{lo:.3g}, {hi:.3g}] and each row's logsumexp is 0 (max "
            f"|logsumexp| {lse_gap:.2g} <= {tol:.2g}): the model returns log-probabilities: "
            "return logits; cross-entropy applies log-softmax itself (and log(softmax(x)) gives "
            "log 0 = -inf, an infinite loss and NaN gradients, once a prediction is confident)"
        )
    else:
        reason = (
            f"outputs span [{lo:.3g}, {hi:.3g}], rows sum to 1 +- {sum_gap:.3g}, their "
            f"logsumexp is 0 +- {lse_gap:.3g}: logits"
        )
    bad = probabilities or log_probabilities
    return Check("logits", not bad, reason, dict(out))


def check_grad_flow(grad_max: dict[str, float], atol: float) -> Check:
    """Every trainable parameter gets max |grad| > atol, and every gradient is finite."""
    dead = [n for n, g in grad_max.items() if math.isfinite(g) and g <= atol]
    bad = [n for n, g in grad_max.items() if not math.isfinite(g)]
    ok = not dead and not bad and bool(grad_max)
    if not grad_max:
        reason = "the model has no trainable parameters"
    elif ok:
        reason = f"all {len(grad_max)} trainable parameters get max |grad| > {atol:g}"
    else:
        parts = []
        if dead:
            parts.append(
                f"{len(dead)} of {len(grad_max)} parameters get no gradient: {_names(dead)}"
            )
        if bad:
            parts.append(f"{len(bad)} parameters get a non-finite gradient: {_names(bad)}")
        reason = "; ".join(parts) + (f" (max |grad| <= {atol:g} counts as none)" if dead else "")
    return Check("grad_flow", ok, reason, {"no_grad": dead, "nonfinite_grad": bad})


def check_batch_independence(max_leak: float, atol: float, max_self: float | None = None) -> Check:
    """d loss_i / d input_j must be 0 for j != i; if max_self is 0 the check saw no input."""
    if math.isnan(max_leak) or (max_self is not None and math.isnan(max_self)):
        return Check(
            "batch_independence",
            False,
            f"non-finite input gradients (max leak {max_leak:g}, max self {max_self})",
            {"max_leak": max_leak, "max_self": max_self},
        )
    if max_self is not None and not max_self > 0:
        return Check(
            "batch_independence",
            False,
            f"could not see the input: d loss_i / d input_i = {max_self:g} for every input "
            "representation (float inputs, nn.Embedding outputs), so leaks cannot be measured",
            {"max_leak": max_leak, "max_self": max_self},
        )
    ok = max_leak <= atol
    return Check(
        "batch_independence",
        ok,
        f"max |d loss_i / d input_j| (j != i) = {max_leak:.3g} {'<=' if ok else '>'} {atol:g}"
        + ("" if ok else ": examples in the batch mix (batch statistics? a reshape across B?)"),
        {"max_leak": max_leak, "max_self": max_self},
    )


def check_zero_input(max_change: float, min_change: float) -> Check:
    """Outputs on zeroed inputs must differ from outputs on the real batch."""
    ok = max_change > min_change
    return Check(
        "zero_input",
        ok,
        f"max |Δlogits| real vs zeroed inputs = {max_change:.3g} {'>' if ok else '<='} {min_change:g}"
        + ("" if ok else ": the output ignores the input"),
        {"max_change": max_change},
    )


def check_dummy_batch(
    shape: tuple[int, ...] | None,
    batch_size: int,
    problem: str | None = None,
    nonfinite: int = 0,
    error: str | None = None,
) -> Check:
    """A batch of an unusual size must give finite outputs that fit the task (`problem`: what is
    wrong with them, None when they fit)."""
    if error is not None:
        ok, reason = False, f"dummy batch of {batch_size} raised {error}"
    elif problem is not None:
        ok, reason = False, f"dummy batch of {batch_size}: {problem}"
    elif nonfinite:
        ok, reason = False, f"dummy batch of {batch_size}: {nonfinite} non-finite outputs"
    else:
        ok, reason = True, f"dummy batch of {batch_size} -> finite outputs {tuple(shape or ())}"
    return Check("dummy_batch", ok, reason, {"shape": shape and list(shape), "error": error})


def check_finite(nonfinite: dict[str, int]) -> Check:
    """{what: number of NaN/Inf entries}; fails naming each that has any."""
    bad = {k: n for k, n in nonfinite.items() if n}
    if bad:
        reason = "non-finite values in " + ", ".join(f"{k} ({n})" for k, n in bad.items())
    else:
        reason = f"{', '.join(nonfinite)} all finite"
    return Check("finite", not bad, reason, {"nonfinite": nonfinite})


def check_param_count(
    trainable: int, total: int, expected: int | None, rel_tol: float = 0.05
) -> Check:
    """The trainable count vs the paper's, when the paper states one; otherwise only reported."""
    counts = f"{trainable:,} trainable / {total:,} total parameters"
    if expected is None:
        return Check("param_count", True, f"{counts} (the paper states no count)")
    gap = abs(trainable - expected) / expected
    ok = gap <= rel_tol
    return Check(
        "param_count",
        ok,
        f"{counts} vs the paper's {expected:,}: off by {gap:.1%} "
        f"{'<=' if ok else '>'} {rel_tol:.1%}",
        {"expected": expected, "rel_gap": gap},
    )


def check_seed_reaches_model(
    m: dict[str, list[str]], seeds: tuple[int, int], rng_same: bool
) -> Check:
    """Two builds of the model under two seeds (measure_seed_effect): some trainable tensor that
    is not constant by design must differ, else every seed of `full seeds=N` starts from the same
    weights (issue 22: a torch.manual_seed(0) in the model's __init__ gave "98.40 +- 0.00 (2
    seeds)", REPRODUCED, the runs bit-identical). rng_same: torch's global RNG state after the
    two builds was identical (something inside the build re-seeded it with a constant)."""
    a, b = seeds
    differ, same, const = m["differ"], m["same"], m["constant"]
    ev = {"seeds": list(seeds), **m, "rng_state_same": rng_same}
    compared = len(differ) + len(same)
    constant = f"{len(const)} constant by design (zeros, ones, scalars) not compared"
    if not compared:
        return Check.not_measured(
            "seed_reaches_model",
            f"no trainable tensor is random-initialised ({constant}): no seed can show",
            ev,
        )
    if differ:
        reason = (
            f"{len(differ)} of {compared} non-constant trainable tensors differ between builds "
            f"under seeds {a} and {b} ({_names(differ)}); {constant}"
        )
        if same:
            reason += f"; identical under both (loaded?): {_names(same)}"
        return Check("seed_reaches_model", True, reason, ev)
    reason = (
        f"every one of the {compared} non-constant trainable tensors is identical in builds under "
        f"seeds {a} and {b} ({_names(same)}): the seed does not reach the model's init, so every "
        "seed of `full seeds=N` trains the same weights and the spread over seeds is 0; "
    )
    reason += (
        "torch's RNG state after both builds is identical too: the model's code re-seeds it with "
        "a constant (torch.manual_seed(0) in __init__?): remove it, repro seeds every build"
        if rng_same
        else "a generator seeded with a constant, or weights loaded from a file? draw from "
        "torch's global RNG, which repro seeds for every build"
    )
    return Check("seed_reaches_model", False, reason, ev)


def check_confidence_stress(m: dict[str, Any] | None, logit_range: float) -> Check:
    """A confident model must keep a finite loss and finite gradients: the output layer's outputs
    scaled to span `logit_range` (measure_confidence_stress). log(softmax(x)) fails here: the
    softmax underflows to 0 and log 0 = -inf."""
    name = "confident_outputs"
    if m is None:
        return Check.not_measured(
            name, "no layer with parameters feeds the output, or its outputs are constant"
        )
    what = (
        f"the output layer {m['layer']}'s outputs scaled x{m['factor']:.3g} (to span "
        f"{logit_range:g}, a confident model)"
    )
    ok = math.isfinite(m["loss"]) and not m["nonfinite"]
    if ok:
        return Check(name, True, f"{what}: loss {m['loss']:.4g} and every gradient finite", m)
    parts = [f"loss {m['loss']:.4g}"]
    if m["nonfinite"]:
        parts.append(f"non-finite gradients in {len(m['nonfinite'])}: {_names(m['nonfinite'])}")
    reason = (
        f"{what}: {', '.join(parts)}: a confident prediction breaks training; log(softmax(x)) "
        "gives log 0 = -inf there: return logits and let the loss apply log-softmax (or use "
        "F.log_softmax / torch.logsigmoid, which stay finite)"
    )
    return Check(name, False, reason, m)


def check_grad_values(m: dict[str, Any], rtol: float, eps: float) -> Check:
    """Autograd's directional derivatives vs central differences of the loss (measure_grad_values:
    a screen across every parameter group, then each group when the screen mismatches). A group
    fails when every one of its directions disagrees beyond rtol x the larger + atol
    (grad_mismatch): a stop-gradient (a .detach(), a no_grad block, .data) on one of the paths
    from a parameter to the loss gives a wrong gradient in every direction, while a direction
    that crosses a kink (ReLU at 0, a max that changes its winner) is one direction's bad luck.
    The absolute tolerance is m["atol"] (grad_check_atol x (1 + |L|): rounding in the loss)."""
    name, atol, screen = "grad_values", m["atol"], m["screen"]

    def wrong(e: dict[str, Any]) -> bool:
        pairs = zip(e["autograd"], e["numeric"], strict=True)
        return bool(e["autograd"]) and all(grad_mismatch(a, n, rtol, atol) for a, n in pairs)

    entries = [screen, *m["groups"]] if screen is not None else []
    ratios = [
        abs(a - n) / (rtol * max(abs(a), abs(n)) + atol)
        for e in entries
        for a, n in zip(e["autograd"], e["numeric"], strict=True)
    ]
    worst = max(ratios, default=0.0) if all(math.isfinite(r) for r in ratios) else math.inf
    ev = {"screen": screen, "groups": m["groups"], "rtol": rtol, "atol": atol, "eps": eps}
    ev |= {"worst_ratio": worst, "loss": m["loss"]}
    if screen is None:
        return Check.not_measured(name, "no trainable parameter to check", ev)
    judged = f"{m['judged']} parameter groups"
    judged += f" (the first {m['judged']} of {m['of']})" if m["of"] > m["judged"] else ""
    tol = f"float64, eps {eps:g}, rtol {rtol:g}, atol {atol:.2g}"
    bad = [e for e in m["groups"] if wrong(e)]
    if not bad:
        how = (
            "one direction across them (each group an equal share)"
            if not m["groups"]
            else "each group (the direction across them all mismatched, but no group in every "
            "direction: a kink crossed?)"
        )
        reason = (
            f"autograd's directional derivatives match central differences ({tol}) on {judged}, "
            f"{how}: the worst gap is {worst:.2g} of the tolerance"
        )
        return Check(name, True, reason, ev)

    def show(e: dict[str, Any]) -> str:
        text = f"{e['group']}: autograd {e['autograd'][0]:.6g} vs numeric {e['numeric'][0]:.6g}"
        if e.get("tensors"):
            named = [t["group"] for t in e["tensors"] if wrong(t)]
            text += f" (the tensors: {_names(named) or 'none alone'})"
        return text

    reason = (
        f"{len(bad)} of {judged} get a gradient that is not the loss's derivative (central "
        f"differences, {tol}, off in every direction): {'; '.join(show(e) for e in bad[:_SHOW])}: "
        "a stop-gradient (.detach(), torch.no_grad(), .data) on one of the paths from these "
        "parameters to the loss, or a custom backward that is wrong"
    )
    return Check(name, False, reason, ev)
