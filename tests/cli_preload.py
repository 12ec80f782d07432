"""Imported once by the server that tests/cli_process.py forks `aqa` from: every module a command may need."""

import importlib
import pkgutil

import av  # noqa: F401
import h5py  # noqa: F401
import scipy.stats  # noqa: F401
import torch  # noqa: F401
import torchvision  # noqa: F401

import aqa_cli

for module in pkgutil.walk_packages(aqa_cli.__path__, "aqa_cli."):
    if module.name != "aqa_cli.__main__":
        importlib.import_module(module.name)
