"""ResNet-20 (He et al. 2016) in PyTorch and Keras: the paper's shape, equal parameters, the same function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spocu.experiments.activations import parse_activation
from spocu.experiments.models.torch_models import ResNet20, count_parameters, initialize


def _torch_net(activation: str = "relu", channels: int = 3, classes: int = 10) -> nn.Module:
    return ResNet20(channels, classes, parse_activation(activation).torch_module)


def test_torch_structure_follows_the_paper():
    net = _torch_net()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert (
        len(convs) == 19 and len([m for m in net.modules() if isinstance(m, nn.Linear)]) == 1
    )  # 6n + 2 = 20 weighted layers
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 6 + [64] * 6
    assert [c.stride[0] for c in convs] == [1] * 7 + [2, 1, 1, 1, 1, 1] + [2, 1, 1, 1, 1, 1]
    assert all(c.bias is None for c in convs) and len([m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]) == 19
    assert len([m for m in net.modules() if isinstance(m, nn.ReLU)]) == 19
    # hand count: convs + batch norms (2 per channel) + classifier
    conv_params = 3 * 16 * 9 + 6 * 16 * 16 * 9 + 16 * 32 * 9 + 5 * 32 * 32 * 9 + 32 * 64 * 9 + 5 * 64 * 64 * 9
    bn_params = 2 * (16 * 7 + 32 * 6 + 64 * 6)
    assert count_parameters(net) == conv_params + bn_params + 64 * 10 + 10 == 269_722
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert net(torch.zeros(1, 3, 28, 28)).shape == (1, 10)  # any image size


def test_activation_in_every_relu_place():
    net = _torch_net("spocu")
    from spocu.torch import SPOCU

    spocus = [m for m in net.modules() if isinstance(m, SPOCU)]
    assert len(spocus) == 19 and len({id(m) for m in spocus}) == 19
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())


def test_option_a_shortcut_is_subsample_and_zero_channels():
    block = _torch_net().blocks[3]  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    torch.testing.assert_close(s[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(s[:, 16:]) == 0


@pytest.mark.parametrize("activation", ["relu", "spocu"])
def test_keras_is_the_same_network(activation):
    keras = pytest.importorskip("keras")
    from spocu.experiments.models.keras_models import count_parameters as keras_count
    from spocu.experiments.models.keras_models import keras_activation, resnet20

    spec = parse_activation(activation)
    net = _torch_net(activation, classes=7).eval()
    initialize(net, spec.init, seed=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial batch-norm state
            for tensor in (bn.weight, bn.bias, bn.running_mean):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) - 0.5)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator) + 0.5)
    model = resnet20((12, 10, 3), 7, lambda: keras_activation(spec))
    assert keras_count(model) == count_parameters(net)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    torch_convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    torch_bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(torch_convs) == 19 and len(bns) == len(torch_bns) == 19
    for layer, conv in zip(convs, torch_convs):
        layer.set_weights([conv.weight.detach().numpy().transpose(2, 3, 1, 0)])
    for layer, bn in zip(bns, torch_bns):
        layer.set_weights([t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)])
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    dense.set_weights([net.fc.weight.detach().numpy().T, net.fc.bias.detach().numpy()])
    x = np.random.default_rng(1).normal(size=(3, 3, 12, 10)).astype("float32")  # odd sizes: stride-2 padding must agree
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = np.asarray(model(x.transpose(0, 2, 3, 1), training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_keras_saves_and_loads(tmp_path):
    keras = pytest.importorskip("keras")
    from spocu.experiments.models.keras_models import keras_activation, resnet20

    spec = parse_activation("spocu")
    model = resnet20((8, 8, 1), 3, lambda: keras_activation(spec))
    model.save(tmp_path / "r.keras")
    loaded = keras.models.load_model(tmp_path / "r.keras")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
