"""{{title_py}}: the paper's own checks, run by `repro stage shapes` (those marked
@pytest.mark.slow run before `repro stage full` trains instead). TODO: the paper's equations,
each against a plain re-implementation (loops, no tricks), and its invariances."""

import torch

from papers.{{paper}}.model import ModelConfig, build_model


def layer(lin: torch.nn.Linear, v: list[float], relu: bool) -> list[float]:
    """W v + b (then max(0, .)), one output unit at a time."""
    out = [
        float(sum(lin.weight[j, k] * v[k] for k in range(len(v))) + lin.bias[j])
        for j in range(lin.out_features)
    ]
    return [max(0.0, o) for o in out] if relu else out


@torch.no_grad()  # the loops read the weights as plain numbers
def test_output_equals_the_equations_written_as_loops():
    """y = w3 relu(W2 relu(W1 x + b1) + b2) + b3, one example and unit at a time."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=3, dropout=0.0), n_features=2).eval()
    first, _, _, second, _, last = model.net
    x = torch.randn(4, 2)
    want = torch.zeros(4)
    for i in range(4):
        want[i] = layer(last, layer(second, layer(first, x[i].tolist(), True), True), False)[0]
    torch.testing.assert_close(model(x), want)


def test_one_value_per_example():
    model = build_model(ModelConfig(hidden=8, dropout=0.0), n_features=5)
    assert model(torch.randn(7, 5)).shape == (7,)
