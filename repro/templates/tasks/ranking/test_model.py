"""{{title_py}}: the paper's own checks, run by `repro stage shapes` too. TODO: the paper's
equations, each against a plain re-implementation (loops, no tricks), and its invariances."""

import torch

from papers.{{paper}}.model import ModelConfig, build_model


def test_score_equals_the_equations_written_as_loops():
    """s = w2 relu(W1 [q; d; q*d] + b1) + b2, one item and unit at a time."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=3, dropout=0.0), n_features=2).eval()
    first, _, _, last = model.net
    q, d = torch.randn(4, 2), torch.randn(4, 2)
    for i in range(4):
        pair = q[i].tolist() + d[i].tolist() + (q[i] * d[i]).tolist()
        h = [max(0.0, float(sum(first.weight[j, k] * pair[k] for k in range(6)) + first.bias[j])) for j in range(3)]
        want = float(sum(last.weight[0, j] * h[j] for j in range(3)) + last.bias[0])
        assert abs(float(model(q, d)[i]) - want) < 1e-5


def test_an_items_score_does_not_depend_on_the_other_items():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=8, dropout=0.0), n_features=4).eval()
    q, d = torch.randn(5, 4), torch.randn(5, 4)
    order = torch.tensor([4, 2, 0, 3, 1])
    assert torch.allclose(model(q, d)[order], model(q[order], d[order]))
