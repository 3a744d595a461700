"""{{title_py}}: the paper's own checks, run by `repro stage shapes` too. TODO: the paper's
equations, each against a plain re-implementation (loops, no tricks), and its invariances."""

import torch

from papers.{{paper}}.model import ModelConfig, build_model


def test_gru_step_equals_the_equations_written_out():
    """One GRU step, h' = (1 - z) n + z h with r, z, n as in the GRU paper (torch's gate order)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding=3, hidden=2, dropout=0.0), vocab_size=5).eval()
    rnn, x = model.rnn, model.embed(torch.tensor([[3]]))[0, 0]  # (E,)
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    gi, gh = w_ih @ x + b_ih, w_hh @ torch.zeros(2) + b_hh  # (3H,)
    r = torch.sigmoid(gi[0:2] + gh[0:2])
    z = torch.sigmoid(gi[2:4] + gh[2:4])
    n = torch.tanh(gi[4:6] + r * gh[4:6])
    want = model.out((1 - z) * n)  # h0 = 0, so z * h0 vanishes
    assert torch.allclose(model(torch.tensor([[3]]))[0, 0], want, atol=1e-6)


def test_a_prediction_does_not_depend_on_later_tokens():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding=4, hidden=8, dropout=0.0), vocab_size=9).eval()
    a, b = torch.tensor([[3, 4, 5, 6]]), torch.tensor([[3, 4, 8, 8]])
    assert torch.equal(model(a)[0, :2], model(b)[0, :2])
