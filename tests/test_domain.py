"""The domain feature extractor: labels of MNIST-layout data sets, the classifier (fitting, caching, refusals), its
class figures in FeatureDistances, and its use in SampleQuality and sample.py on a 28×28 data set generated here."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ddpm_signrelu.cli.domain import classifier_main
from ddpm_signrelu.data import FashionMNISTDataModule, KMNISTDataModule, MNISTDataModule
from ddpm_signrelu.data.files import idx_labels
from ddpm_signrelu.errors import CheckpointError, ConfigError, DataError
from ddpm_signrelu.metrics.domain import (DomainClassifier, accuracy, fingerprint, fit_classifier, load_classifier,
                                          save_classifier)
from ddpm_signrelu.metrics.fid import FeatureDistances, image_distances

from test_cli import ROOT, run, tiny_config
from test_vision_data import write_idx


def bar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 images of 10 classes: class c is a bright horizontal bar on rows 2c + 4, 2c + 5, over noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28))
    for i, c in enumerate(labels):
        images[i, 2 * c + 4:2 * c + 6] = rng.integers(180, 256, (2, 28))
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_data_set(root, name: str = "MNIST", sizes=(600, 200)) -> dict:
    """Extracted IDX images and labels (no archives, so no published checksums apply) under ``root/name/raw``."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, n, seed in zip(("train", "t10k"), sizes, (0, 1)):
        images, labels = bar_images(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        arrays[split] = (images, labels)
    return arrays


def test_idx_labels_and_their_bad_files(tmp_path):
    data = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 0, 9])
    assert idx_labels(data, tmp_path / "f", "fix").tolist() == [7, 0, 9]
    with pytest.raises(DataError, match=r"f is not a valid IDX label file: its header gives 4 labels but 3 bytes "
                                        r"follow; fix"):
        idx_labels(data[:4] + (4).to_bytes(4, "big") + data[8:], tmp_path / "f", "fix")
    with pytest.raises(DataError, match=r"not that of uint8 labels in 1 dimension \(magic 0x00000801\)"):
        idx_labels(bytes([0, 0, 8, 3]) + data[4:], tmp_path / "f", "fix")


@pytest.mark.parametrize("module", [MNISTDataModule, FashionMNISTDataModule, KMNISTDataModule])
def test_every_mnist_layout_data_set_reads_its_labelled_splits(tmp_path, module):
    arrays = write_data_set(tmp_path, module.dataset_name)
    dm = module(root=str(tmp_path), val_size=50, num_workers=0)
    train, train_labels, test, test_labels = dm.labelled_splits()
    assert torch.equal(train[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(test_labels, torch.from_numpy(arrays["t10k"][1]).long())
    assert train_labels.dtype == torch.int64 and test.shape == (200, 1, 28, 28)
    assert dm.classifier_path == tmp_path / module.dataset_name / "domain_classifier.pt"
    dm.setup("fit")
    assert torch.equal(dm.train_data, train) and dm.val_data.shape == (50, 1, 28, 28)


def test_a_missing_label_file_is_named(tmp_path):
    write_data_set(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"MNIST/raw/t10k-labels-idx1-ubyte.gz not found \(nor t10k-labels-idx1-ubyte\)"
                                        r": copy it there"):
        MNISTDataModule(root=str(tmp_path)).labelled_splits()


def test_the_classifier_learns_deterministically():
    (x, y), (x_test, y_test) = bar_images(600, 0), bar_images(200, 1)
    x, x_test = torch.from_numpy(x)[:, None], torch.from_numpy(x_test)[:, None]
    y, y_test = torch.from_numpy(y).long(), torch.from_numpy(y_test).long()
    first = fit_classifier(x, y, epochs=2, log=lambda _: None)
    second = fit_classifier(x, y, epochs=2, log=lambda _: None)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert accuracy(first, x_test, y_test) >= 0.95  # chance: 0.1
    rgb = x_test[:5].expand(-1, 3, -1, -1)  # what FID's extractors receive
    assert first(rgb).shape == (5, first.num_features) and torch.equal(first(rgb), first(x_test[:5]))
    with pytest.raises(ConfigError, match=r"image sides must be multiples of 4, got 30x30"):
        DomainClassifier((1, 30, 30), 10)


def test_a_saved_classifier_loads_the_same_and_refuses_other_data_and_other_files(tmp_path):
    x, y = bar_images(100, 0)
    x = torch.from_numpy(x)[:, None]
    model = fit_classifier(x, torch.from_numpy(y).long(), epochs=1, log=lambda _: None)
    save_classifier(model, tmp_path / "c.pt", fingerprint(x), 0.5)
    loaded = load_classifier(tmp_path / "c.pt", fingerprint(x))
    assert torch.equal(loaded(x[:8]), model(x[:8])) and loaded.test_accuracy == 0.5
    with pytest.raises(CheckpointError, match=r"c.pt was trained on other images than this data set's training split; "
                                              r"delete it and fit it with python -m ddpm_signrelu.cli.domain"):
        load_classifier(tmp_path / "c.pt", fingerprint(x[1:]))
    (tmp_path / "junk.pt").write_bytes(b"not a file torch wrote")
    with pytest.raises(CheckpointError, match=r"junk.pt is not a readable domain classifier"):
        load_classifier(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt is not a domain classifier written by ddpm_signrelu"):
        load_classifier(tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"no domain classifier at .*none.pt; fit it with python -m "
                                          r"ddpm_signrelu.cli.domain --config <your train config>"):
        load_classifier(tmp_path / "none.pt")


class TwoClasses(nn.Module):
    """Features: the first two pixels of the first channel, in [0, 1]; logits: the features themselves."""

    def forward(self, images):
        return images[:, 0, 0, :2].double() / 255

    def logits(self, features):
        return features


def test_class_figures_precision_and_recall_in_numbers():
    first, second = torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    first[:, 0, 0, 0] = 255  # class 0 by the features [1, 0]
    second[:, 0, 0, 1] = 255  # class 1
    real = torch.cat([first, second])
    distances = FeatureDistances(TwoClasses(), (1, 4, 4), kid_subset_size=4)
    distances.update(real, real=True)
    distances.update(real, real=False)
    scores = distances.compute()
    confident = math.e / (math.e + 1)  # softmax of logits (1, 0)
    assert scores["precision"] == scores["recall"] == 1.0
    assert scores["confidence"] == pytest.approx(confident) and scores["confidence_real"] == pytest.approx(confident)
    assert scores["class_entropy"] == pytest.approx(1.0) and scores["min_class_share"] == pytest.approx(1.0)
    distances.reset_generated()
    distances.update(first, real=False)  # all of class 0, half the real manifold
    scores = distances.compute()
    assert scores["class_entropy"] == 0.0 and scores["min_class_share"] == 0.0
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5
    assert scores["fid"] > 0.2


def test_fitting_needs_labels_and_a_writable_place(tmp_path, capsys):
    with pytest.raises(SystemExit):
        classifier_main(["--config", str(ROOT / "configs" / "digits.yaml"), "--output", str(tmp_path / "c.pt")])
    assert capsys.readouterr().err.strip() == ("error: DigitsDataModule has no class labels, so no domain classifier: "
                                               "use another feature extractor (features: inception)")
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        classifier_main(["--config", str(ROOT / "configs" / "fashion_mnist_small.yaml"), "--output",
                         str(tmp_path / "file" / "c.pt")])
    assert "; or pass --output with a writable file path" in capsys.readouterr().err


def small_config(tmp_path):
    """configs/fashion_mnist_small.yaml shrunk by tiny_config, its data under tmp_path/data, SampleQuality shrunk."""
    path = tiny_config(tmp_path, "fashion_mnist_small", {"root": str(tmp_path / "data"), "num_workers": 0})
    config = yaml.safe_load(path.read_text())
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("SampleQuality"):
            cb["init_args"].update({"num_samples": 16, "steps": 3, "max_reference": 64, "every_n_val_checks": 1})
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_small_config_trains_on_another_28x28_set_with_domain_quality_logged(tmp_path, capsys):
    """The Fashion-MNIST config on an MNIST-layout set generated here, by swapping the data class on the command
    line: refused before any step until its classifier is fitted, then FID & co. in the domain features logged."""
    write_data_set(tmp_path / "data")
    config, swap = small_config(tmp_path), ["--data", "ddpm_signrelu.data.MNISTDataModule"]
    result = run("train.py", "fit", "--config", config, *swap)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"error: no domain classifier at {tmp_path}/data/MNIST/domain_classifier.pt;"
                                          f" fit it with python -m ddpm_signrelu.cli.domain --config <your train "
                                          f"config>")
    assert not (tmp_path / "run" / "checkpoints").exists()
    classifier_main(["--config", str(config), *swap, "--epochs", "2"])
    assert "test accuracy 1.0000 on 200 images; wrote" in capsys.readouterr().out
    result = run("train.py", "fit", "--config", config, *swap)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.csv") as f:
        header = f.readline().strip().split(",")
    for name in ("fid", "kid", "kid_std", "precision", "recall", "confidence", "confidence_real", "class_entropy",
                 "min_class_share"):
        assert f"quality/{name}_domain" in header, name
    result = run("sample.py", "--ckpt_path", tmp_path / "run" / "checkpoints" / "last.ckpt", "--num_samples", 12,
                 "--sampler", "dpmpp_2m", "--steps", 4, "--output", tmp_path / "out", "--reference",
                 tmp_path / "run" / "config.yaml", "--features", "domain")  # the run's config: MNIST's classifier
    assert result.returncode == 0, result.stderr[-3000:]
    quality = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert set(quality) == {"fid", "kid", "kid_std", "precision", "recall", "confidence", "confidence_real",
                            "class_entropy", "min_class_share"}
    dm = MNISTDataModule(root=str(tmp_path / "data"))
    dm.setup("fit")  # the reference: the whole training split, through the cached classifier
    classifier = load_classifier(dm.classifier_path, fingerprint(dm.train_data))
    with torch.no_grad():
        expected = classifier.logits(classifier(dm.train_data)).softmax(1).max(1).values.double().mean().item()
    assert quality["confidence_real"] == pytest.approx(expected, rel=1e-5)


def test_image_distances_with_the_domain_features_of_a_file(tmp_path):
    x, y = bar_images(100, 0)
    x = torch.from_numpy(x)[:, None]
    save_classifier(fit_classifier(x, torch.from_numpy(y).long(), epochs=1, log=lambda _: None), tmp_path / "c.pt",
                    fingerprint(x), 0.5)
    same = image_distances(x[:50], x[:50], "domain", str(tmp_path / "c.pt"))
    assert abs(same["fid"]) < 1e-6 and same["precision"] == same["recall"] == 1.0
    with pytest.raises(ConfigError, match=r"features 'domain' needs the classifier's file \(weights_path\)"):
        image_distances(x[:50], x[:50], "domain")
