"""Hydra instantiates launchers only from classes defined in the hydra_plugins package: this is where
cnnstudy's SLURM launcher (src/cnnstudy/slurm.py) gets its Hydra name, the preset's _target_."""

from cnnstudy import slurm


class SlurmLauncher(slurm.SlurmLauncher):
    """cnnstudy.slurm.SlurmLauncher, under the name Hydra accepts."""
