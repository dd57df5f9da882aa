import json
import os

import pytest
import torch
from hydra.utils import instantiate

from cnnstudy.data import ImageDataModule
from cnnstudy.data.sources import DATASETS, load
from cnnstudy.errors import UserError

from conftest import ROOT, run_cli

SIZES = {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000), "cifar2": (10_000, 2_000)}


@pytest.mark.parametrize("name", list(SIZES))
def test_real_splits_have_the_published_sizes_and_class_counts(data_root, name):
    train_x, train_y = load(name, str(data_root), True)
    test_x, test_y = load(name, str(data_root), False)
    assert (len(train_y), len(test_y)) == SIZES[name]
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    if name == "mnist":
        assert train_x.shape[1:] == (1, 28, 28)
        assert torch.bincount(test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        assert train_y[:5].tolist() == [5, 0, 4, 1, 9]
    elif name == "cifar10":
        assert train_x.shape[1:] == (3, 32, 32)
        assert torch.bincount(train_y).tolist() == [5000] * 10
        assert train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
        assert train_x[0, 0, 0, :3].tolist() == [59, 43, 50]  # red values of data_batch_1 image 0
    else:
        assert torch.bincount(train_y).tolist() == [5000, 5000]
        assert torch.bincount(test_y).tolist() == [1000, 1000]


def test_cifar2_is_airplane_and_bird_relabelled(data_root):
    x10, y10 = load("cifar10", str(data_root), False)
    x2, y2 = load("cifar2", str(data_root), False)
    keep = (y10 == 0) | (y10 == 2)
    assert torch.equal(x2, x10[keep])
    assert torch.equal(y2, (y10[keep] == 2).long())


@pytest.mark.parametrize("name", list(SIZES))
def test_datamodule_holds_out_a_seeded_validation_split(cfg_for, data_root, name):
    dm = instantiate(cfg_for(f"data={name}", f"data.root={data_root}").data)
    dm.setup("fit")
    n_train = SIZES[name][0]
    assert len(dm.val_set) == round(0.1 * n_train) and len(dm.train_set) + len(dm.val_set) == n_train
    again = instantiate(cfg_for(f"data={name}", f"data.root={data_root}", "seed=7").data)
    again.setup("fit")
    assert torch.equal(again.val_set.labels, dm.val_set.labels), "the hold-out must not depend on the run seed"
    images, labels = next(iter(dm.train_dataloader()))
    x = dm.normalize(images)
    assert x.dtype == torch.float32 and x.shape == (100, dm.channels, dm.image_size, dm.image_size)
    low = (0 - dm.mean) / dm.std
    high = (1 - dm.mean) / dm.std
    assert (x >= low - 1e-6).all() and (x <= high + 1e-6).all()
    assert x.amin().item() == pytest.approx(low.min().item(), abs=1e-5)


def test_shuffle_depends_only_on_seed_and_epoch(data_root):
    dm = ImageDataModule("mnist", 1, 28, 10, [0.5], [0.5], root=str(data_root), shuffle_seed=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    first = next(iter(loader))[1]
    loader.sampler.set_epoch(1)
    other = next(iter(loader))[1]
    loader.sampler.set_epoch(2)
    assert torch.equal(next(iter(loader))[1], first) and not torch.equal(first, other)


def test_missing_data_is_one_user_error_naming_the_path(tmp_path):
    with pytest.raises(UserError) as error:
        load("mnist", str(tmp_path), True, download=False)
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_file_is_named(tmp_path, data_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        source = (data_root / "MNIST" / "raw" / name).read_bytes()
        (raw / name).write_bytes(source[: len(source) // 2] if "images" in name else source)
    with pytest.raises(UserError, match="train-images-idx3-ubyte has the wrong sha256"):
        load("mnist", str(tmp_path), True, download=False)


def test_a_second_load_is_served_from_memory_until_the_file_changes(tmp_path, data_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((data_root / "MNIST" / "raw" / name).read_bytes())
    images, labels = load("mnist", str(tmp_path), False, download=False)
    assert torch.equal(images, load("mnist", str(data_root), False)[0])

    # Same size and modification time, different bytes: a load that read the file would fail its sha256.
    path = raw / "t10k-images-idx3-ubyte"
    stat = path.stat()
    path.write_bytes(bytes(stat.st_size))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = load("mnist", str(tmp_path), False, download=False)
    assert again[0] is images and again[1] is labels

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # now it looks replaced
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte has the wrong sha256"):
        load("mnist", str(tmp_path), False, download=False)


def test_batch_larger_than_split_is_refused(data_root):
    dm = ImageDataModule("cifar2", 3, 32, 2, [0.5] * 3, [0.5] * 3, root=str(data_root), batch_size=20_000)
    with pytest.raises(UserError, match="larger than the training split"):
        dm.setup("fit")


def test_augmentation_keeps_shape_and_dtype_and_varies_per_sample(data_root):
    from cnnstudy.data.augment import RandomZoomRotate

    images = load("mnist", str(data_root), True)[0][:64].float().div(255)
    batch = images[:1].expand(64, -1, -1, -1)  # one digit 64 times: any difference is the augmentation
    torch.manual_seed(0)
    out = RandomZoomRotate(degrees=10, crop_p=0.5)(batch)
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    distinct = {tuple(x.flatten()[::7].tolist()) for x in out}
    assert len(distinct) == 64, "every sample must get its own random parameters"
    assert (out - batch).abs().mean() > 0.01
    identity = RandomZoomRotate(degrees=0, crop_p=0.0)(images)
    assert torch.allclose(identity, images, atol=1e-5)


def test_zoom_is_a_centre_crop_resized_back(data_root):
    from cnnstudy.data.augment import RandomZoomRotate

    image = load("mnist", str(data_root), True)[0][:1].float().div(255)
    zoomed = RandomZoomRotate(degrees=0, crop_p=1.0, crop_size=22)(image)
    expected = torch.nn.functional.interpolate(image[..., 3:25, 3:25], size=28, mode="bilinear", align_corners=False)
    assert (zoomed - expected).abs().mean() < 0.02
    assert (zoomed - image).abs().mean() > 0.02


def test_an_unknown_name_lists_the_registered_datasets(data_root):
    with pytest.raises(UserError) as error:
        ImageDataModule("fashion", 1, 28, 10, [0.5], [0.5], root=str(data_root))
    assert str(error.value) == f"data.name='fashion' is unknown: use one of {', '.join(sorted(DATASETS))}"
    assert {"mnist", "cifar10", "cifar2"} <= DATASETS.keys()


def test_a_config_that_does_not_match_the_files_is_named(data_root):
    dm = ImageDataModule("cifar2", 1, 28, 2, [0.5], [0.5], root=str(data_root))
    with pytest.raises(UserError, match=r"holds images of shape \(3, 32, 32\).*conf/data/cifar2.yaml"):
        dm.setup("fit")


def test_a_dataset_registered_outside_the_package_is_a_data_choice(data_root):
    from even_digits import EvenDigits  # registers even_digits

    assert isinstance(DATASETS["even_digits"], EvenDigits)
    dm = ImageDataModule("even_digits", 1, 28, 5, [0.5], [0.5], root=str(data_root))
    dm.setup("fit")
    mnist_train, mnist_test = load("mnist", str(data_root), True)[1], load("mnist", str(data_root), False)[1]
    assert len(dm.train_set) + len(dm.val_set) == int((mnist_train % 2 == 0).sum()) == 29_492
    assert torch.bincount(dm.test_set.labels).tolist() == torch.bincount(mnist_test)[::2].tolist()


@pytest.mark.subprocess
def test_a_new_dataset_is_one_module_and_one_config_and_trains(tmp_path, data_root):
    from even_digits import EVEN_DIGITS_CONFIG

    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "even_digits.yaml").write_text(EVEN_DIGITS_CONFIG)
    run_dir = tmp_path / "run"
    result = run_cli(
        "even_digits",
        "--config-dir",
        str(tmp_path / "conf"),
        "data=even_digits",
        f"hydra.run.dir={run_dir}",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=30",
        "trainer.limit_val_batches=5",
        "trainer.limit_test_batches=5",
        env={"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["choices"]["data"] == "even_digits"
    assert metrics["test_acc"] > 0.8, metrics["test_acc"]  # 5 classes: chance is 0.2
