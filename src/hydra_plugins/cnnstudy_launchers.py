"""Hydra instantiates launchers only from classes defined in the hydra_plugins package: this is where
cnnstudy's local launchers (src/cnnstudy/launchers.py) get their Hydra names, the presets' _target_."""

from cnnstudy import launchers


class ParallelLauncher(launchers.ParallelLauncher):
    """cnnstudy.launchers.ParallelLauncher, under the name Hydra accepts."""


class LocalLauncher(launchers.LocalLauncher):
    """cnnstudy.launchers.LocalLauncher, under the name Hydra accepts."""
