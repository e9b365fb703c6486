"""`smt_hf.__version__` is the package's one version: pyproject.toml declares it dynamic and reads it from there, so
the installed distribution, the package and the model cards agree."""

import importlib.metadata
import tomllib
from pathlib import Path

import smt_hf
from smt_hf.hub import _version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads(PYPROJECT.read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "smt_hf.__version__"}
    from setuptools.config.pyprojecttoml import read_configuration  # what `pip install .` / `-e .` build with

    assert read_configuration(PYPROJECT, expand=True)["project"]["version"] == smt_hf.__version__


def test_installed_metadata_and_cards_name_the_package_version():
    assert importlib.metadata.version("smt-hf") == smt_hf.__version__
    assert _version() == smt_hf.__version__
