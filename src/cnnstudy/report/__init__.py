"""The sweep report (`python -m cnnstudy.report <sweep>`), one module per job: records (reading a sweep),
groups (seeds of one setup), compare (lr series, BN vs no-BN pairs), stats, plots, markdown, probe_sections (a
module per probe), dashboard (TensorBoard's tb_summary/), command (the entry point). See cnnstudy.report.command
for what it writes."""

from cnnstudy.report.command import main, report
from cnnstudy.report.jobs import archive, latest_sweep

__all__ = ["archive", "latest_sweep", "main", "report"]
