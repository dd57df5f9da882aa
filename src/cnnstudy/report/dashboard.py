"""The TensorBoard dashboard: `tb_summary/<line>/` runs with each group's mean curves over seeds, and a
custom-scalars layout with one chart per value of the other varying keys (e.g. one chart per learning
rate, overlaying bn and nobn). TensorBoard colours a chart's curves by run, so each line (model, optimizer,
study arm) is a run of its own and keeps its colour in every chart; the tag is `<metric>/<chart>`.
`tensorboard --logdir <sweep>` shows them beside the jobs' own runs."""

import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from cnnstudy.report.groups import Group, override_key


def is_line_key(key: str) -> bool:
    """What a chart overlays (model, optimizer, study arm); other varying keys pick the chart."""
    return key in ("model", "optim") or key.startswith("arm/")


def write_dashboard(sweep_dir: Path, groups: list[Group], common: set[str]) -> None:
    from torch.utils.tensorboard import SummaryWriter  # torch takes seconds to import: not for a command that fails

    root = sweep_dir / "tb_summary"
    shutil.rmtree(root, ignore_errors=True)  # written anew: a previous report's runs would linger beside these
    charts = defaultdict(dict)
    for group in (g for g in groups if g.n):
        varying = [o for o in group.overrides if o not in common]
        line = " ".join(o for o in varying if is_line_key(override_key(o))) or "all"
        panel = " ".join(o for o in varying if not is_line_key(override_key(o))) or "all"
        with SummaryWriter(str(root / line.replace("/", "_"))) as writer:
            for metric in ("val_acc", "train_loss"):
                per_epoch = defaultdict(list)
                for job in group.completed:
                    for e in job.epochs:
                        if e.get(metric) is not None:
                            per_epoch[e["epoch"]].append(e[metric])
                for epoch, values in sorted(per_epoch.items()):  # the step: the epoch from 1, as in curves.png
                    writer.add_scalar(f"{metric}/{panel}", statistics.fmean(values), epoch + 1)
                chart = f"{metric}: {panel} (mean over seeds)"
                charts[metric][chart] = ["Multiline", [re.escape(f"{metric}/{panel}") + "$"]]
    with SummaryWriter(str(root)) as writer:  # the layout, in a run of its own
        writer.add_custom_scalars({metric.replace("_", " "): dict(c) for metric, c in charts.items()})
