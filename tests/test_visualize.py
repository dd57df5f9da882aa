import pytest
import torch

from cnnstudy.visualize import apply_kernels

from conftest import run_cli


def test_hand_set_kernels_blur_and_find_vertical_edges():
    image = torch.zeros(1, 8, 8)
    image[:, :, 4:] = 1.0  # a vertical step between columns 3 and 4
    responses = apply_kernels(image)
    edges = responses["vertical edges"]
    assert edges[2:6, 3].abs().min() == 3 and edges[2:6, 4].abs().min() == 3  # the columns beside the step
    assert edges[2:6, 1].abs().max() == 0 and edges[2:6, 6].abs().max() == 0  # flat regions give nothing
    blurred = responses["box blur"]
    assert torch.allclose(blurred[2:6, 6], torch.ones(4)) and torch.allclose(blurred[2:6, 3], torch.full((4,), 1 / 3))


@pytest.mark.subprocess
def test_visualize_writes_kernels_and_a_trained_models_feature_maps(tmp_path, data_root):
    run = tmp_path / "run"
    trained = run_cli(
        "cnnstudy.train", f"hydra.run.dir={run}", f"data.root={data_root}", "model=session5", "trainer.max_epochs=1",
        "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = tmp_path / "pictures"
    result = run_cli("cnnstudy.visualize", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    names = {p.name for p in out.glob("*.png")}
    assert {"kernels.png", "filters.png", "input.png", "0_ConvBlock.png", "8_ConvBlock.png"} <= names
    for path in out.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 100
