"""{{title_py}}: the paper's own checks. TODO: add invariances the paper implies."""

import pytest
import torch

from papers.{{paper}}.model import build_model
from repro.errors import ConfigError


def test_logits_shape_and_determinism():
    torch.manual_seed(0)
    a = build_model({"hidden": 8}, n_features=5, num_classes=3)
    torch.manual_seed(0)
    b = build_model({"hidden": 8}, n_features=5, num_classes=3)
    x = torch.randn(4, 5)
    assert a(x).shape == (4, 3)
    assert torch.equal(a(x), b(x))


def test_unknown_config_key_is_rejected():
    with pytest.raises(ConfigError, match="model.hiden: unknown key"):
        build_model({"hiden": 8}, n_features=5, num_classes=3)
