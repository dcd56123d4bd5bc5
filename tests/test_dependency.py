"""Dependency-aware counts: a removed filter takes the next layer's input
channel with it, through a flatten too; an unread channel takes its filter."""

import torch
from torch import nn

from prunebench.dependency import count_weights, effective_model
from prunebench.tasks.classification.models import create_model


def _lenet():
    torch.manual_seed(0)
    return create_model("lenet5_caffe", num_classes=10, in_chans=1).eval(), torch.zeros(1, 1, 28, 28)


def test_a_zero_filter_removes_the_next_layers_channel_and_the_fc_columns():
    model, x = _lenet()
    with torch.no_grad():
        model.conv1.weight[3] = 0  # one of 20 filters: conv2 loses input channel 3 (50 x 25 weights)
        model.conv2.weight[7] = 0  # one of 50 filters: fc1 loses its 16 columns (500 x 16 weights)
    eff, count = effective_model(model, x)
    total, nonzero = count_weights(model)
    assert count.total_weights == total == 20 * 25 + 50 * 20 * 25 + 500 * 800 + 500 * 10
    assert count.nonzero_weights == nonzero
    # conv2's channel 3 (minus its row 7 already zero: 49 x 25) and fc1's columns 7*16..7*16+15
    assert count.weights_removed == 49 * 25 + 500 * 16
    assert count.effective_nonzero_weights == nonzero - count.weights_removed
    assert count.dead_units == {"conv1": 1, "conv2": 1}
    # the hidden layers' units, where a unit can die; fc2's rows are the model's outputs
    assert count.units == {"conv1": 20, "conv2": 50, "fc1": 500}
    assert count.as_dict()["units"] == {"conv1": 20, "conv2": 50, "fc1": 500}
    assert not eff.conv2.weight[:, 3].any() and not eff.fc1.weight[:, 7 * 16:8 * 16].any()
    assert eff.conv1.bias[3] == 0 and eff.conv2.bias[7] == 0  # the removed filters' constant output goes too
    assert model.conv2.weight[:, 3].any()  # the original is untouched
    assert count.effective_rate > count.rate


def test_an_unread_channel_removes_its_filter():
    model, x = _lenet()
    with torch.no_grad():
        model.fc1.weight[:, 2 * 16:3 * 16] = 0  # nobody reads conv2's channel 2
    eff, count = effective_model(model, x)
    assert count.dead_units == {"conv2": 1}
    assert not eff.conv2.weight[2].any() and eff.conv2.bias[2] == 0
    assert count.weights_removed == 20 * 25


def test_outputs_are_not_removed_and_removal_chains():
    model, x = _lenet()
    with torch.no_grad():
        model.fc2.weight[4] = 0  # a class logit: a model output, kept with its bias
        model.conv2.weight[:, :] = 0
        model.conv2.weight[0] = 1.0  # one live filter: fc1 reads only its 16 columns
        model.fc1.weight[:, :16] = 0  # ...and not any more: conv2 is dead, so conv1 is unread
    eff, count = effective_model(model, x)
    assert "fc2" not in count.dead_units and eff.fc2.bias[4] == model.fc2.bias[4]
    assert count.dead_units["conv2"] == 50 and count.dead_units["conv1"] == 20
    assert not eff.conv1.weight.any()


def test_batch_norm_channels_of_removed_filters_are_zeroed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()
    with torch.no_grad():
        model[1].bias.fill_(0.5)
        model[0].weight[1] = 0
    eff, count = effective_model(model, torch.zeros(1, 3, 8, 8))
    assert count.dead_units == {"0": 1}
    assert eff[1].weight[1] == 0 and eff[1].bias[1] == 0 and eff[1].bias[0] == 0.5
    assert not eff[3].weight[:, 1].any()
    # the channel's constant (relu of the batch norm's shift) is now in the consumer's bias
    assert count.folded_constants == {"0": 1}
    images = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(eff(images), model(images), rtol=1e-5, atol=1e-5)


def test_a_removed_filters_constant_moves_into_the_consumers_bias_and_the_function_is_kept():
    model, x = _lenet()
    with torch.no_grad():
        model.conv1.weight[3] = 0
        model.conv2.weight[7] = 0
        model.fc1.weight[11] = 0  # a hidden fc unit: relu(bias) reaches fc2
        model.conv1.bias[3], model.conv2.bias[7], model.fc1.bias[11] = 0.7, -0.4, 0.9
    eff, count = effective_model(model, x)
    assert count.folded_constants == {"conv1": 1, "conv2": 1, "fc1": 1} and count.dropped_constants == {}
    assert eff.conv1.bias[3] == 0 and eff.fc1.bias[11] == 0  # removed with their units...
    images = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # ...and the model computes what it computed before
        torch.testing.assert_close(eff(images), model(images), rtol=1e-5, atol=1e-5)
    assert count.as_dict()["folded_constants"] == {"conv1": 1, "conv2": 1, "fc1": 1}


def test_a_constant_a_padded_consumer_sees_only_inside_its_border_is_dropped_and_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight[1] = 0
        model[0].bias[1] = 0.8
    eff, count = effective_model(model, torch.zeros(1, 3, 8, 8))
    assert count.dead_units == {"0": 1}
    assert count.dropped_constants == {"0": 1} and count.folded_constants == {}
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # dropping it changes the function (the old rule, kept where no fold is exact)
        assert not torch.allclose(eff(images), model(images), atol=1e-4)
        model[0].bias[1] = 0
        torch.testing.assert_close(eff(images), model(images))
