"""The report's sections for the probes' scalars (each job's probes.json, `Job.probes`): a module of this package
per probe (or family of probes), holding its tables and plots. Its `section(groups, comparisons, sweep_dir)` writes
its PNGs into the sweep dir and returns them with its report.md lines, or returns None for a sweep without its
probe. The report takes every module here, in name order: a new probe's section is one new file, nothing to edit."""

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Section:
    lines: list[str]  # report.md's
    plots: list[str] = field(default_factory=list)  # the PNGs written into the sweep dir, for the report's list


def probe_sections(groups: list, comparisons: list, sweep_dir: Path) -> list[Section]:
    """Every module's section the sweep has, in module name order."""
    sections = []
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        section = importlib.import_module(f"{__name__}.{module}").section(groups, comparisons, Path(sweep_dir))
        if section is not None:
            sections.append(section)
    return sections
