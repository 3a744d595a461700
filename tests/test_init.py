"""Tests for repro/train/init.py: which layers get He, which Xavier, and the variances they get."""

import pytest
import torch
from torch import nn

from repro.errors import ConfigError
from repro.train.init import OUTPUT_GAIN, apply_init


def _var(p: torch.Tensor) -> float:
    return p.detach().double().var().item()


def test_he_variance_is_2_over_fan_in():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU())
    report = apply_init(model)
    assert report["0.weight"].startswith("he")
    assert _var(model[0].weight) == pytest.approx(2 / 1000, rel=0.05)
    assert torch.count_nonzero(model[0].bias) == 0


def test_xavier_variance_is_2_over_fan_in_plus_fan_out():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 500), nn.Tanh())
    report = apply_init(model)
    assert report["0.weight"].startswith("xavier")
    assert _var(model[0].weight) == pytest.approx(2 / 1500, rel=0.05)


def test_conv_feeding_relu_gets_he_with_fan_in_over_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 256, kernel_size=3), nn.BatchNorm2d(256), nn.ReLU())
    report = apply_init(model)
    assert report["0.weight"].startswith("he")
    assert _var(model[0].weight) == pytest.approx(2 / (64 * 9), rel=0.05)


def test_sequential_relu_tanh_last_layer_and_skipped_modules():
    model = nn.Sequential(
        nn.Linear(8, 8),
        nn.Dropout(0.5),
        nn.LayerNorm(8),
        nn.GELU(),  # Dropout and LayerNorm are skipped: layer 0 feeds GELU
        nn.Linear(8, 8),
        nn.Tanh(),
        nn.Sequential(nn.Linear(8, 8)),  # nested: feeds the outer ReLU
        nn.ReLU(),
        nn.Linear(8, 3),  # output layer
    )
    report = apply_init(model)
    assert report["0.weight"] == "he: kaiming_normal_(fan_in, relu) (feeds GELU)"
    assert report["4.weight"] == "xavier: xavier_uniform_ (feeds Tanh)"
    assert report["6.0.weight"].startswith("he")
    assert report["8.weight"] == (
        "output: xavier_uniform_(gain=0.1) (output layer: the last Linear/Conv registered in the model)"
    )
    for name in ("0.bias", "4.bias", "6.0.bias", "8.bias"):
        assert report[name] == "zeros"
    assert "2.weight" not in report  # LayerNorm keeps its ones


def test_init_nonlinearity_attribute_overrides_sequential():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 1000))
    model[0].init_nonlinearity = "linear"  # feeds ReLU, but the attribute wins
    model[2].init_nonlinearity = "relu"  # last layer, but the attribute wins
    report = apply_init(model)
    assert report["0.weight"] == "xavier: xavier_uniform_ (init_nonlinearity='linear')"
    assert report["2.weight"] == "he: kaiming_normal_(fan_in, relu) (init_nonlinearity='relu')"
    assert _var(model[0].weight) == pytest.approx(2 / 2000, rel=0.05)
    assert _var(model[2].weight) == pytest.approx(2 / 1000, rel=0.05)


def test_bad_init_nonlinearity_is_a_config_error():
    layer = nn.Linear(2, 2)
    layer.init_nonlinearity = "swish"
    with pytest.raises(ConfigError, match="'swish'.*'relu', 'tanh', 'linear'"):
        apply_init(layer)


def test_layer_outside_sequential_gets_xavier():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(x)))  # the ReLU is invisible from outside

    report = apply_init(Net())
    assert report["hidden.weight"] == "xavier: xavier_uniform_ (no activation seen after it)"
    assert report["out.weight"].startswith("output")


def test_lstm_weights_get_xavier_per_gate_and_zero_biases():
    torch.manual_seed(0)
    lstm = nn.LSTM(input_size=600, hidden_size=400, num_layers=2, bidirectional=True)
    report = apply_init(lstm)
    for name, p in lstm.named_parameters():
        if name.startswith("bias"):
            assert report[name] == "zeros"
            assert torch.count_nonzero(p) == 0
        else:
            assert report[name].startswith("xavier")
            fan_in = p.shape[1]
            for gate in p.chunk(4, dim=0):  # each (400, fan_in) gate
                assert _var(gate) == pytest.approx(2 / (fan_in + 400), rel=0.05)
    assert "weight_hh_l1_reverse" in report


def test_gru_gets_three_gates():
    gru = nn.GRU(10, 20)
    assert apply_init(gru)["weight_ih_l0"] == "xavier: xavier_uniform_ (recurrent, per gate x3)"


def test_torch_scheme_changes_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.LSTM(10, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_init(model, "torch") == {}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="'orthogonal'.*'he_xavier', 'torch'"):
        apply_init(nn.Linear(2, 2), "orthogonal")


def test_frozen_embedding_and_custom_parameters_untouched():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.scale = nn.Parameter(torch.full((8,), 3.0))
            self.mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
            self.mlp[0].weight.requires_grad_(False)

    torch.manual_seed(0)
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = apply_init(net)
    for name in ("emb.weight", "scale", "mlp.0.weight"):
        assert name not in report
        assert torch.equal(net.state_dict()[name], before[name]), name
    assert set(report) == {"mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    assert torch.count_nonzero(net.mlp[0].bias) == 0


def test_report_names_every_initialised_parameter():
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    report = apply_init(model)
    assert set(report) == {name for name, _ in model.named_parameters()}
    assert report["0.weight"].startswith("he")
    assert report["3.weight"].startswith("output")


# ---- the output layer starts small: loss at init ~ ln C (Karpathy's Recipe, issue 13) -----------
def _mlp(n_in: int = 16, hidden: int = 64, classes: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def test_output_layer_gets_xavier_scaled_by_the_output_gain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 500))
    report = apply_init(model)
    assert report["2.weight"].startswith("output: xavier_uniform_(gain=0.1)")
    assert _var(model[2].weight) == pytest.approx(OUTPUT_GAIN**2 * 2 / 1500, rel=0.05)
    assert report["0.weight"].startswith("he")  # a layer feeding a ReLU is never the output


def test_standardised_inputs_start_near_ln_c_and_every_parameter_gets_a_gradient():
    """The case of issue 13: unit-variance inputs gave 2.13 vs ln 3 with Xavier on the head."""
    import math

    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y = torch.randn(256, 16), torch.randint(0, 3, (256,))  # standardised: unit variance
    model = _mlp()
    apply_init(model)
    loss = F.cross_entropy(model(x), y)
    assert abs(loss.item() - math.log(3)) < 0.05 * math.log(3)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad.abs().max() > 0, name  # small, not zero: the gradient reaches every layer
    # the previous rule (gain 1 on the head) started far above ln C on the same data
    torch.manual_seed(0)
    old = _mlp()
    old[2].init_nonlinearity = "linear"
    apply_init(old)
    assert F.cross_entropy(old(x), y).item() > math.log(3) + 0.4  # measured 1.63


def test_marked_output_layer_wins_over_the_last_registered():
    class HeadFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 3)
            self.head.init_nonlinearity = "output"
            self.body = nn.Linear(4, 8)

        def forward(self, x):
            return self.head(self.body(x))

    report = apply_init(HeadFirst())
    assert report["head.weight"] == "output: xavier_uniform_(gain=0.1) (init_nonlinearity='output')"
    assert report["body.weight"].startswith("xavier")


def test_no_output_layer_when_the_last_layer_is_marked_otherwise():
    model = _mlp()
    model[2].init_nonlinearity = "tanh"
    assert not any(v.startswith("output") for v in apply_init(model).values())
