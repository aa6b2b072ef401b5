import numpy as np
import pytest
from PIL import Image

from iqalib import classifiers, folding


@pytest.fixture(scope="module")
def lite0():
    return classifiers.load_classifier("efficientnet_lite0", "cpu")


def test_lite0_classifies_the_foolbox_samples(lite0, foolbox_images):
    proba = lite0.predict_proba([Image.open(p) for p, _ in foolbox_images])
    labels = np.array([label for _, label in foolbox_images])
    assert proba.shape == (20, 1000) and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert (proba.argmax(1) == labels).sum() >= 17


def test_any_size_and_mode_is_accepted(lite0):
    images = [Image.new("RGB", (37, 500), (200, 30, 30)), Image.new("L", (1200, 90), 128), Image.new("RGBA", (224, 224))]
    assert lite0.predict_proba(images, batch_size=2).shape == (3, 1000)


def test_head_of_cached_embedding_equals_full_pass(lite0, foolbox_images):
    images = [Image.open(p) for p, _ in foolbox_images[:3]]
    from iqalib.features import backbone_rows, pooled

    emb = pooled(lite0, backbone_rows(lite0, images))
    import torch

    with torch.inference_mode():
        direct = lite0.logits_from_pixels(lite0.pixels(images)).softmax(1).numpy()
    assert np.allclose(lite0.proba_from_embeddings(emb), direct, atol=1e-5)


def test_wnids_are_imagenet_order(lite0):
    assert len(lite0.wnids) == 1000 and lite0.wnids[0] == "n01440764" and lite0.wnids[281] == "n02123045"


def test_paper_models_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(classifiers.WeightsNotFoundError) as info:
        classifiers.load_classifier("resnet152", "cpu")
    assert "resnet152-394f9c45.pth" in str(info.value) and "TORCH_HOME" in str(info.value)


def test_paper_model_loads_from_a_given_file(tmp_path):
    import torch
    import torchvision

    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    clf = classifiers.load_classifier("alexnet", "cpu", str(path))
    assert clf.embedding_dim == 4096 and clf.predict_proba([Image.new("RGB", (300, 200), "red")]).shape == (1, 1000)


def test_unknown_classifier_lists_choices():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        classifiers.load_classifier("lenet")



def test_batchnorm_is_folded_into_the_convolutions_without_changing_the_function(lite0):
    """The classifier runs with every BatchNorm folded (timm's BatchNormAct2d leaves its activation
    behind); the function is the unfolded network's, taps included, up to float rounding."""
    import torch

    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.backbone.modules())
    unfolded = classifiers.load_classifier("efficientnet_lite0", "cpu", fold_batchnorm=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.backbone.modules())
    z = lite0.normalize(torch.rand(2, 3, 224, 224) * 255.0)
    with torch.inference_mode():
        for ours, theirs in zip(lite0.forward_with_stats(z), unfolded.forward_with_stats(z)):
            torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-3)
    assert lite0.stat_layout == unfolded.stat_layout


def test_folding_checks_the_function_and_keeps_an_unfoldable_network():
    """A ResNet-style block (conv, bn, relu) folds to the same function; a network whose BatchNorm
    is registered right after a convolution it does not follow in the forward pass stays as it
    was, with a warning."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, channels: int = 4):
            super().__init__()
            self.conv = nn.Conv2d(3, channels, 3, padding=1, bias=False)
            self.bn, self.relu = nn.BatchNorm2d(channels), nn.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class NormalisesFirst(Block):
        def forward(self, x):
            return self.conv(self.bn(x))

    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    block = Block()
    block.bn.running_mean.uniform_(-1, 1), block.bn.running_var.uniform_(0.5, 2), block.bn.weight.data.uniform_(0.5, 2)
    folded = folding.fold_batchnorm_checked(block.eval(), 16, torch.device("cpu"))
    assert isinstance(folded.bn, nn.Identity) and folded.conv.bias is not None and isinstance(block.bn, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), block(x), atol=1e-5, rtol=1e-4)
    odd = NormalisesFirst(3).eval()
    odd.bn.running_mean.fill_(0.7)
    with pytest.warns(UserWarning, match="unfolded"):
        kept = folding.fold_batchnorm_checked(odd, 16, torch.device("cpu"))
    assert kept is odd and isinstance(odd.bn, nn.BatchNorm2d)


def test_tap_statistics_are_each_channels_mean_and_log_std_in_either_layout():
    import torch

    rng = np.random.default_rng(0)
    maps = [rng.normal(2.0, 0.5, (3, 4, 7, 5)).astype(np.float32), rng.uniform(0, 6, (3, 2, 6, 6)).astype(np.float32)]
    maps[1][:, 1] = 3.0  # a channel with no spread: log(0 + 1e-3)
    expected = np.concatenate([np.concatenate([m.mean((2, 3)), np.log(m.std((2, 3)) + 1e-3)], 1) for m in maps], 1)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = classifiers.tap_statistics([torch.from_numpy(m).contiguous(memory_format=layout) for m in maps])
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
