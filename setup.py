"""The wheel carries conf/ as cnnstudy/conf: conf/ stays at the top of the checkout (where Hydra users and
the docs look for it) and is copied into the built package, so an installed cnnstudy finds its configs
without a checkout. An editable install copies nothing: cnnstudy.config.CONF_DIR falls back to the
checkout's conf/. Everything else about the build is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConf(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copytree("conf", Path(self.build_lib) / "cnnstudy" / "conf", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConf})
