"""Screenshots of what a reader looks at, taken with headless Chromium, to look at them as a person would.

    python -m cnnstudy.report.screenshots <sweep or archive dir> [--out DIR]    # make screenshots

Run after `python -m cnnstudy.report <dir>`. Starts TensorBoard on the dir (127.0.0.1, a free port), waits until
it lists every run there, and writes into --out (default: the dir) `tensorboard_scalars.png` (each job's curves),
`tensorboard_custom_scalars.png` (the report's overlay of the groups' mean curves) and `tensorboard_hparams.png`
(one row per job); then `figures.png`, the figures of the dir's report.md on one page. An archive
(docs/results/<study>/) keeps no job events: its TensorBoard has the overlay only, and no HPARAMS view is taken.
TensorBoard and Chromium are stopped whatever happens, Ctrl-C and SIGTERM included.

TensorBoard shows curves smoothed (0.6) and with "ignore outliers in chart scaling" ticked, which cuts the curves
of a few epochs off the chart; the screenshots turn both off, as a reader should (see `prime_profile`).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cnnstudy.errors import UserError, fail
from cnnstudy.report.markdown import REPORT_FILE

WINDOW = (1400, 900)
HPARAMS_WINDOW = (1800, 600)  # the table is wide: the metric columns come last
# The legacy dashboards read their smoothing and run filter from the URL: smoothing 0 draws the numbers as they were
# logged; the overlay's run list, filtered to its lines, is its legend.
VIEWS = {
    "scalars": "#scalars&_smoothingWeight=0",
    "custom_scalars": "#custom_scalars&_smoothingWeight=0&regexInput=tb_summary",
    "hparams": "#hparams",
}
# TensorBoard keeps "ignore outliers" in the browser's local storage only (ticked by default).
PRIMING_PAGE = b"<script>localStorage.setItem('_ignoreYOutliers', 'false')</script>"
ALL_VIEWS = [*VIEWS, "figures"]
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise UserError("chromium not found: apt-get install chromium (or put chromium on PATH)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_chromium(chromium: str, profile: Path, url: str, *args: str, timeout: float = 90) -> None:
    """One headless Chromium run in a process group of its own, killed whole afterwards: its renderer and GPU
    processes never outlive it, even when this is interrupted."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *args, url]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def screenshot(chromium: str, profile: Path, url: str, path: Path, size: tuple[int, int] = WINDOW) -> Path:
    """`url` as a window of `size` shows it, after 15 s of the page's own (virtual) time to fetch and draw."""
    path.unlink(missing_ok=True)
    run_chromium(chromium, profile, url, f"--screenshot={path}", f"--window-size={size[0]},{size[1]}",
                 "--virtual-time-budget=15000")  # fmt: skip
    if not path.exists():
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return path


def prime_profile(chromium: str, profile: Path, port: int) -> None:
    """Untick TensorBoard's "ignore outliers" in `profile`: local storage belongs to an origin, so a page served
    on 127.0.0.1:`port`, where TensorBoard will listen next, sets it."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PRIMING_PAGE)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run_chromium(chromium, profile, f"http://127.0.0.1:{port}/", "--dump-dom")
    finally:
        server.shutdown()
        server.server_close()


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as response:
        return json.loads(response.read())


def event_dirs(logdir: Path) -> set[str]:
    """The runs TensorBoard will list: each folder under `logdir` with event files, relative to it."""
    return {("." if p.parent == logdir else str(p.parent.relative_to(logdir))) for p in logdir.rglob("events.out.*")}


@contextmanager
def tensorboard(logdir: Path, port: int, timeout: float = 120) -> Iterator[str]:
    """TensorBoard on 127.0.0.1:`port` for `logdir`; yields its URL once /data/runs lists every run there."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--load_fast", "false"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, expected = f"http://127.0.0.1:{port}", event_dirs(logdir)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tensorboard exited: {process.stderr.read()[-2000:]}")
            try:
                if expected <= set(get(f"{url}/data/runs")):
                    break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"tensorboard did not list the runs of {logdir} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def has_hparams(url: str) -> bool:
    return bool(get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""}).get("hparamInfos"))


def figures_page(report: Path) -> tuple[str, tuple[int, int]]:
    """An HTML page of the figures `report` (markdown) shows, one under the other at their own size (at most the
    window's width), each under its file name and caption; and the window size that shows them all."""
    from PIL import Image  # matplotlib's own dependency

    width, height, parts = WINDOW[0], 0, []
    for caption, name in IMAGE.findall(report.read_text()):
        path = (report.parent / name).resolve()
        w, h = Image.open(path).size
        shown = min(w, width - 40)
        height += round(h * shown / w) + 60
        parts.append(f"<h3>{name}: {caption}</h3><img src='{path.as_uri()}' width={shown}>")
    style = "body{margin:10px 20px;font:14px sans-serif;background:white} h3{margin:16px 0 4px;font-size:15px}"
    return f"<html><head><style>{style}</style></head><body>{''.join(parts)}</body></html>", (width, height + 40)


def take(sweep_dir: Path, out: Path, views: list[str] = ALL_VIEWS) -> list[Path]:
    """The screenshots of `sweep_dir`'s TensorBoard `views` and of its report's figures ("figures" in `views`),
    written into `out`."""
    chromium = find_chromium()
    report = sweep_dir / REPORT_FILE
    if not report.exists() or not (sweep_dir / "tb_summary").is_dir():
        raise UserError(f"{sweep_dir} has no report: run python -m cnnstudy.report {sweep_dir} first")
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with tempfile.TemporaryDirectory(prefix="cnnstudy-screenshots-") as tmp:
        profile, port = Path(tmp) / "profile", free_port()
        if board_views := [v for v in views if v in VIEWS]:
            prime_profile(chromium, profile, port)
            with tensorboard(sweep_dir, port) as url:
                for view in board_views:
                    if view == "hparams" and not has_hparams(url):
                        print(f"hparams: no job's events under {sweep_dir} (an archive keeps none); not taken")
                        continue
                    size = HPARAMS_WINDOW if view == "hparams" else WINDOW
                    path = out / f"tensorboard_{view}.png"
                    shots.append(screenshot(chromium, profile, f"{url}/{VIEWS[view]}", path, size))
        if "figures" in views:
            html, size = figures_page(report)
            page = Path(tmp) / "figures.html"
            page.write_text(html)
            shots.append(screenshot(chromium, profile, page.as_uri(), out / "figures.png", size))
    return shots


def stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds, so TensorBoard and Chromium are stopped on the way out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnnstudy.report.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="a sweep or archive folder that python -m cnnstudy.report has reported")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: the dir)")
    parser.add_argument(
        "--views", default=",".join(ALL_VIEWS), help=f"which, comma-separated (default: all of {','.join(ALL_VIEWS)})"
    )
    parser.error = fail
    args = parser.parse_args(argv)
    views = args.views.split(",")
    if unknown := [v for v in views if v not in ALL_VIEWS]:
        fail(f"--views={','.join(unknown)} is not one of {','.join(ALL_VIEWS)}")
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        for shot in take(args.dir, args.out or args.dir, views):
            print(shot)
    except (OSError, UserError, RuntimeError) as e:
        fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C: TensorBoard and Chromium are already stopped; one line, no traceback
        fail("stopped by SIGINT", 130)


if __name__ == "__main__":
    main(sys.argv[1:])
