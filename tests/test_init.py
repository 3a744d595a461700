"""Tests for repro/train/init.py: which layers get He, which Xavier, and the variances they get."""

import pytest
import torch
from torch import nn

from repro.errors import ConfigError
from repro.train.init import apply_init


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
    assert report["8.weight"] == "xavier: xavier_uniform_ (no activation seen after it)"
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

        def forward(self, x):
            return torch.relu(self.hidden(x))  # invisible from outside

    report = apply_init(Net())
    assert report["hidden.weight"].startswith("xavier")


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
    assert report["3.weight"].startswith("xavier")
