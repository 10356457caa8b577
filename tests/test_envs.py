import tomllib

import yaml
from packaging.requirements import Requirement

CONDA_TO_PYPI = {"pytorch": "torch", "opencv": "opencv-python-headless"}


def test_conda_env_mirrors_pyproject_dependencies(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    pypi = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        pypi[req.name.lower()] = str(req.specifier)
    env = yaml.safe_load((repo / "envs" / "streetvision.yaml").read_text())
    conda = {}
    for entry in env["dependencies"]:
        if isinstance(entry, str) and entry.split(">")[0].split("=")[0].split("<")[0] not in ("python", "pip"):
            req = Requirement(entry)
            conda[CONDA_TO_PYPI.get(req.name.lower(), req.name.lower())] = str(req.specifier)
    assert conda == pypi
