"""Default weight initialisation where a paper is silent: He before ReLU-family layers, else Xavier.

Scheme "he_xavier" (design.md, "Defaults where the paper is silent"):

- nn.Linear / nn.Conv1d/2d/3d whose output feeds a ReLU-family activation (ReLU, LeakyReLU,
  GELU, SiLU, ELU, Mish, ...): He, `kaiming_normal_(mode="fan_in", nonlinearity="relu")`,
  i.e. N(0, 2/fan_in). We chose the normal form because it is what He et al. (2015) wrote down.
- the same layers feeding tanh/sigmoid and layers with no activation after them: Xavier
  (Glorot), `xavier_uniform_` (gain 1), i.e. variance 2/(fan_in+fan_out), the form Glorot &
  Bengio (2010) wrote down.
- the output layer (the one that computes the logits): Xavier scaled down, `xavier_uniform_`
  with gain OUTPUT_GAIN = 0.1 (variance 0.01 x 2/(fan_in+fan_out)), so that the logits start
  small and the cross-entropy at init is close to ln C, as Karpathy's "A Recipe for Training
  Neural Networks" (2019, "init well") asks; the weights are not zero, so the gradient still
  reaches every layer below at the first step. Measured (issue 13): the scaffold's MLP on
  standardised inputs started at 2.13 vs ln 3 = 1.10 with gain 1 (the shapes gate failed a
  correct change); on one draw of the weights, 2.23 with gain 1 and 1.13 with gain 0.1.
  Which layer is the output layer: the one(s) with `init_nonlinearity = "output"`, else the
  last nn.Linear / nn.Conv registered in the model (module definition order) unless something
  says it feeds an activation; that is the classifier head in the usual layout (a model that
  defines its head first must mark it).
- nn.LSTM / nn.GRU / nn.RNN: `xavier_uniform_` on every weight_ih* / weight_hh* (and weight_hr*),
  one gate at a time: torch stacks the gates (4 for LSTM, 3 for GRU) into one matrix, and each
  gate is its own (hidden x input) map, so its variance is 2/(fan_in+hidden).
- every bias of those modules: zero.

What a layer feeds is read (a) from the layer's attribute `init_nonlinearity = "relu" | "tanh" |
"linear" | "output"`, which always wins, else (b) inside an nn.Sequential (nested ones
flattened) from the next module after the layer, skipping dropout, normalisation and Identity,
else (c) it is treated as "linear" (Xavier): a layer called from a hand-written forward() cannot
be seen from outside.

Left untouched: embeddings (a paper's vectors or torch's N(0, 1)), normalisation layers,
nn.Parameters defined directly on other modules, other module types, and frozen parameters
(requires_grad False).

Scheme "torch" keeps torch's own initialisation. Note that torch's default for Linear/Conv,
kaiming_uniform_ with a=sqrt(5) (variance 1/(3 fan_in)), is neither He nor Xavier: applying
nothing is *not* "He".
"""

from __future__ import annotations

from torch import nn

from repro.errors import ConfigError

SCHEMES = ("he_xavier", "torch")
NONLINEARITIES = ("relu", "tanh", "linear", "output")
# The output layer's Xavier gain: logits ~10x smaller than a hidden layer's, so CE at init ~ ln C
# (module docstring); small, not zero, so that every parameter below gets a gradient at init.
OUTPUT_GAIN = 0.1

HE = "he: kaiming_normal_(fan_in, relu)"
XAVIER = "xavier: xavier_uniform_"
OUTPUT = f"output: xavier_uniform_(gain={OUTPUT_GAIN})"
ZEROS = "zeros"

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_RECURRENT = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}  # gates stacked in each weight matrix
_RELU_FAMILY = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Mish,
    nn.Hardswish,
)
_TANH_FAMILY = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink)
# Modules that sit between a layer and its activation without changing which one it is.
_TRANSPARENT = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def apply_init(model: nn.Module, scheme: str = "he_xavier") -> dict[str, str]:
    """Initialise `model` in place; return {parameter name: what was applied and why}."""
    if scheme not in SCHEMES:
        raise ConfigError(f"init scheme {scheme!r} is unknown; expected one of {list(SCHEMES)}")
    if scheme == "torch":
        return {}

    feeds = _activation_after_layers(model)
    outputs = _output_layers(model, feeds)
    applied: dict[str, str] = {}
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(module, _LAYERS):
            if id(module) in outputs:
                nonlinearity, why = "output", outputs[id(module)]
            else:
                nonlinearity, why = _nonlinearity(module, feeds.get(id(module)))
            for pname, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                if pname == "weight" and nonlinearity == "relu":
                    nn.init.kaiming_normal_(p, mode="fan_in", nonlinearity="relu")
                    applied[prefix + pname] = f"{HE} ({why})"
                elif pname == "weight" and nonlinearity == "output":
                    nn.init.xavier_uniform_(p, gain=OUTPUT_GAIN)
                    applied[prefix + pname] = f"{OUTPUT} ({why})"
                elif pname == "weight":
                    nn.init.xavier_uniform_(p)
                    applied[prefix + pname] = f"{XAVIER} ({why})"
                elif pname == "bias":
                    nn.init.zeros_(p)
                    applied[prefix + pname] = ZEROS
        elif type(module) in _RECURRENT:
            gates = _RECURRENT[type(module)]
            for pname, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                if pname.startswith("weight_hr"):  # LSTM projection: one matrix, no gates
                    nn.init.xavier_uniform_(p)
                    applied[prefix + pname] = f"{XAVIER} (recurrent projection)"
                elif pname.startswith("weight"):
                    for gate in p.data.chunk(gates, dim=0):  # (4H, in) -> 4 x (H, in)
                        nn.init.xavier_uniform_(gate)
                    applied[prefix + pname] = f"{XAVIER} (recurrent, per gate x{gates})"
                elif pname.startswith("bias"):
                    nn.init.zeros_(p)
                    applied[prefix + pname] = ZEROS
    return applied


def _output_layers(model: nn.Module, feeds: dict[int, nn.Module | None]) -> dict[int, str]:
    """{id(layer): why} for the output layer(s): those marked init_nonlinearity="output", else
    the last nn.Linear / nn.Conv registered in the model when nothing says it feeds an activation
    (no init_nonlinearity, no ReLU/tanh after it in an nn.Sequential)."""
    layers = [m for m in model.modules() if isinstance(m, _LAYERS)]
    marked = [m for m in layers if getattr(m, "init_nonlinearity", None) == "output"]
    if marked:
        return {id(m): "init_nonlinearity='output'" for m in marked}
    if not layers or getattr(layers[-1], "init_nonlinearity", None) is not None:
        return {}
    last = layers[-1]
    if _nonlinearity(last, feeds.get(id(last)))[0] != "linear":
        return {}
    return {id(last): "output layer: the last Linear/Conv registered in the model"}


def _nonlinearity(layer: nn.Module, next_module: nn.Module | None) -> tuple[str, str]:
    """("relu" | "tanh" | "linear" | "output", why) for one layer."""
    explicit = getattr(layer, "init_nonlinearity", None)
    if explicit is not None:
        if explicit not in NONLINEARITIES:
            raise ConfigError(
                f"{type(layer).__name__}.init_nonlinearity is {explicit!r}; "
                f"expected one of {list(NONLINEARITIES)}"
            )
        return explicit, f"init_nonlinearity={explicit!r}"
    if next_module is None:
        return "linear", "no activation seen after it"
    name = type(next_module).__name__
    if isinstance(next_module, _RELU_FAMILY):
        return "relu", f"feeds {name}"
    if isinstance(next_module, _TANH_FAMILY):
        return "tanh", f"feeds {name}"
    return "linear", f"feeds {name}, not an activation"


def _activation_after_layers(model: nn.Module) -> dict[int, nn.Module | None]:
    """{id(layer): the module it feeds in its nn.Sequential (None when last)} for every layer."""
    feeds: dict[int, nn.Module | None] = {}
    for module in model.modules():  # parents come before children: the outermost view wins
        if not isinstance(module, nn.Sequential):
            continue
        chain = [m for m in _flatten(module) if not isinstance(m, _TRANSPARENT)]
        for i, m in enumerate(chain):
            if isinstance(m, _LAYERS) and id(m) not in feeds:
                feeds[id(m)] = chain[i + 1] if i + 1 < len(chain) else None
    return feeds


def _flatten(seq: nn.Sequential) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in seq:
        out.extend(_flatten(m) if isinstance(m, nn.Sequential) else [m])
    return out
