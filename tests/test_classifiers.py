import numpy as np
import pytest
from PIL import Image

from iqalib import classifiers


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
