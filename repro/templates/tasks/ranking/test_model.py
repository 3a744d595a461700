"""{{title_py}}: the paper's own checks, run by `repro stage shapes` (those marked
@pytest.mark.slow run before `repro stage full` trains instead). TODO: the paper's equations,
each against a plain re-implementation (loops, no tricks), and its invariances."""

import torch

from papers.{{paper}}.model import ModelConfig, build_model


@torch.no_grad()  # the loops read the weights as plain numbers
def test_score_equals_the_equations_written_as_loops():
    """s = w2 relu(W1 [q + d; q * d; |q - d|] + b1) + b2, one item and unit at a time."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=3, dropout=0.0), n_features=2).eval()
    first, _, _, last = model.net
    q, d = torch.randn(4, 2), torch.randn(4, 2)
    want = torch.zeros(4)
    for i in range(4):
        qi, di = q[i].tolist(), d[i].tolist()
        pair = [a + b for a, b in zip(qi, di)] + [a * b for a, b in zip(qi, di)]
        pair += [abs(a - b) for a, b in zip(qi, di)]
        h = [
            max(0.0, float(sum(first.weight[j, k] * pair[k] for k in range(6)) + first.bias[j]))
            for j in range(3)
        ]
        want[i] = float(sum(last.weight[0, j] * h[j] for j in range(3)) + last.bias[0])
    torch.testing.assert_close(model(q, d), want)


def test_an_items_score_does_not_depend_on_the_other_items():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=8, dropout=0.0), n_features=4).eval()
    q, d = torch.randn(5, 4), torch.randn(5, 4)
    order = torch.tensor([4, 2, 0, 3, 1])
    torch.testing.assert_close(model(q, d)[order], model(q[order], d[order]))
