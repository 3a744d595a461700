"""{{title_py}}: the paper's own checks, run by `repro stage shapes` (those marked
@pytest.mark.slow run before `repro stage full` trains instead). TODO: the paper's equations,
each against a plain re-implementation (loops, no tricks), and its invariances."""

import torch

from papers.{{paper}}.model import ModelConfig, build_model


@torch.no_grad()  # the loops read the weights as plain numbers
def test_gru_step_equals_the_equations_written_out():
    """One GRU step, h' = (1 - z) n + z h with r, z, n as in the GRU paper (torch's gate order),
    then the next-token logits W h' + b, one unit at a time."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding=3, hidden=2, dropout=0.0), vocab_size=5).eval()
    rnn, x = model.rnn, model.embed.weight[3].tolist()  # token 3's embedding (E,)
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0

    def sigmoid(v: float) -> float:
        return float(torch.sigmoid(torch.tensor(v)))

    h = []
    for j in range(2):  # h0 = 0: W_hh h0 vanishes, only its biases remain
        rows = [g * 2 + j for g in range(3)]  # unit j of the r, z and n gates
        gi = [float(sum(w_ih[row, k] * x[k] for k in range(3)) + b_ih[row]) for row in rows]
        gh = [float(b_hh[row]) for row in rows]
        r, z = sigmoid(gi[0] + gh[0]), sigmoid(gi[1] + gh[1])
        n = float(torch.tanh(torch.tensor(gi[2] + r * gh[2])))
        h.append((1 - z) * n)
    out = model.out
    want = torch.tensor(
        [float(sum(out.weight[v, j] * h[j] for j in range(2)) + out.bias[v]) for v in range(5)]
    )
    torch.testing.assert_close(model(torch.tensor([[3]]))[0, 0], want)


def test_a_prediction_does_not_depend_on_later_tokens():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embedding=4, hidden=8, dropout=0.0), vocab_size=9).eval()
    a, b = torch.tensor([[3, 4, 5, 6]]), torch.tensor([[3, 4, 8, 8]])
    assert torch.equal(model(a)[0, :2], model(b)[0, :2])
