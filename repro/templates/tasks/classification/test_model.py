"""{{title_py}}: the paper's own checks, run by `repro stage shapes` (those marked
@pytest.mark.slow run before `repro stage full` trains instead). TODO: the paper's equations,
each against a plain re-implementation (loops, no tricks), and its invariances."""

import torch

from papers.{{paper}}.model import ModelConfig, build_model


@torch.no_grad()  # the loops read the weights as plain numbers
def test_logits_equal_the_equations_written_as_loops():
    """logits = W2 relu(W1 x + b1) + b2, computed one example and unit at a time."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=4, dropout=0.0), n_features=3, num_classes=2).eval()
    x = torch.randn(5, 3)
    first, _, _, last = model.net
    want = torch.zeros(5, 2)
    for i in range(5):
        h = [
            max(0.0, float(sum(first.weight[j, k] * x[i, k] for k in range(3)) + first.bias[j]))
            for j in range(4)
        ]
        for c in range(2):
            want[i, c] = float(sum(last.weight[c, j] * h[j] for j in range(4)) + last.bias[c])
    torch.testing.assert_close(model(x), want)


def test_same_seed_same_model():
    torch.manual_seed(0)
    a = build_model(ModelConfig(hidden=8, dropout=0.0), n_features=5, num_classes=3)
    torch.manual_seed(0)
    b = build_model(ModelConfig(hidden=8, dropout=0.0), n_features=5, num_classes=3)
    x = torch.randn(4, 5)
    assert a(x).shape == (4, 3)
    assert torch.equal(a(x), b(x))
