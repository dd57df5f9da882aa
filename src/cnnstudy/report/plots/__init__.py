"""The report's PNG plots: curves per epoch, test accuracy and stability per lr (the probes' plots are their sections',
cnnstudy.report.probe_sections).

Drawn around a study's settings (the `key=value` overrides that tell its groups apart): a study that crosses two
settings gets one panel per level of the one with fewer levels (e.g. per norm) and a line per level of the other.
Each `plot_*` function returns its Figure (None where there is nothing to draw) so the plotted values can be read back.

A module per kind of figure, each on the shared look of `style` (colours, markers, line styles, legends, log
axes): `curves` (train loss and val accuracy per epoch), `lr` (test accuracy and stability per lr, accuracy per
arm, the 50 % edge per training budget), `verdicts` (a study's claims at a glance).
"""
