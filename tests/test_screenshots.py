"""Screenshots of a real sweep's TensorBoard and report, taken by a real headless Chromium: they show something."""

import urllib.error
from pathlib import Path

import pytest
from PIL import Image

from cnnstudy.errors import UserError
from cnnstudy.report import report
from cnnstudy.report.screenshots import HPARAMS_WINDOW, WINDOW, find_chromium, free_port, get, tensorboard

from conftest import run_cli, tiny_sweep


def has_chromium() -> bool:
    try:
        find_chromium()
    except UserError:
        return False
    return True


def distinct_colours(path: Path) -> int:
    return len(Image.open(path).convert("RGB").getcolors(1 << 24))


def leftovers(marker: str) -> list[str]:
    """Command lines of the processes still running that mention `marker`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        if marker in text:
            found.append(text)
    return found


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not has_chromium(), reason="chromium not installed (apt-get install chromium)")
def test_screenshots_of_a_real_sweep_show_its_curves_table_and_figures(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    trained = tiny_sweep(data_root, sweep)
    assert trained.returncode == 0, trained.stderr[-3000:]
    report(sweep)

    # TensorBoard answers only once it lists every job's run and the report's summary runs; then it is stopped
    with tensorboard(sweep, free_port()) as url:
        runs = get(f"{url}/data/runs")
    assert [job for job in range(4) if not any(run.startswith(f"{job}/tb/model=") for run in runs)] == []
    assert {"tb_summary/model=bn", "tb_summary/model=nobn"} <= set(runs)
    with pytest.raises(urllib.error.URLError):
        get(f"{url}/data/runs")

    out = tmp_path / "shots"
    taken = run_cli("cnnstudy.report.screenshots", str(sweep), "--out", str(out))
    assert taken.returncode == 0, taken.stderr[-3000:]
    names = ["tensorboard_scalars.png", "tensorboard_custom_scalars.png", "tensorboard_hparams.png", "figures.png"]
    assert taken.stdout.split() == [str(out / name) for name in names]
    sizes = {name: Image.open(out / name).size for name in names}
    assert sizes["tensorboard_scalars.png"] == sizes["tensorboard_custom_scalars.png"] == WINDOW
    assert sizes["tensorboard_hparams.png"] == HPARAMS_WINDOW
    assert sizes["figures.png"][0] == WINDOW[0] and sizes["figures.png"][1] > 1200  # curves, test acc, stability
    # drawn curves: over a thousand colours (these views of a TensorBoard with no runs: under 800; a blank page: 1)
    for name in ("tensorboard_scalars.png", "tensorboard_custom_scalars.png", "figures.png"):
        assert distinct_colours(out / name) > 1200, name
    assert distinct_colours(out / "tensorboard_hparams.png") > 200  # a table: text, checkboxes, the tabs
    assert leftovers(str(sweep)) == [] and leftovers("cnnstudy-screenshots-") == []  # TensorBoard, Chromium


@pytest.mark.subprocess
def test_without_chromium_one_line_says_how_to_install_it(tmp_path):
    result = run_cli("cnnstudy.report.screenshots", str(tmp_path), env={"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: chromium not found: apt-get install chromium (or put chromium on PATH)"
    ]
