"""The pictures and maps in docs/ stay true to the code."""

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from helpers import REPO, run_cli

SVG = "{http://www.w3.org/2000/svg}"


def dag_structure(svg: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(node labels, edges as label pairs) of a Graphviz SVG: independent of layout and Graphviz version."""
    root = ET.fromstring(svg)
    labels, edges = {}, []
    for group in root.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title").text
        if group.get("class") == "node":
            labels[title] = " / ".join(t.text or "" for t in group.iter(f"{SVG}text"))
        elif group.get("class") == "edge":
            edges.append(tuple(title.split("->")))
    return sorted(labels.values()), sorted((labels[a], labels[b]) for a, b in edges)


@pytest.mark.slow
def test_docs_dag_svg_is_the_demo_dag_of_today(tmp_path):
    if shutil.which("dot") is None:
        pytest.fail("graphviz 'dot' is not installed: apt-get install graphviz (.ci/run does this)")
    dag = run_cli("snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--dag", timeout=300)
    assert dag.returncode == 0, dag.stderr[-2000:]
    svg = subprocess.run(["dot", "-Tsvg"], input=dag.stdout, capture_output=True, text=True,
                         check=True).stdout
    fresh = dag_structure(svg)
    assert fresh == dag_structure((REPO / "docs" / "dag.svg").read_text()), (
        "docs/dag.svg is stale: regenerate it with `snakemake --dag | dot -Tsvg > docs/dag.svg`")
    assert any(label.startswith("explora") for label in fresh[0])


def test_architecture_map_names_every_rule_script_and_runner():
    text = (REPO / "docs" / "architecture.md").read_text()
    for smk in sorted((REPO / "rules").glob("*.smk")):
        if smk.stem == "common":
            continue
        assert (REPO / "scripts" / f"{smk.stem}.py").is_file(), f"rule {smk.stem} has no scripts/{smk.stem}.py"
        assert (REPO / "src/streetvision/phases" / f"{smk.stem}.py").is_file(), f"rule {smk.stem} has no runner"
        assert f"| `{smk.stem}`" in text, f"docs/architecture.md lacks a row for rule {smk.stem}"


def test_every_step_of_the_table_is_wired_the_way_how_to_add_a_step_says():
    """Each step in steps.STEPS: a rule built from the table, a script, a runner that names its step once, a docs
    row; and the recipe names exactly the files a new step touches."""
    from streetvision.steps import STEPS

    text = (REPO / "docs" / "architecture.md").read_text()
    recipe = text[text.index("## How to add a step"):]
    for touched in ("src/streetvision/steps.py", "rules/calibrate2.smk", "scripts/calibrate2.py",
                    "src/streetvision/phases/calibrate2.py", "config/schema.yaml", "a row of the table",
                    "tests/"):
        assert touched in recipe, f"'How to add a step' does not name {touched}"
    assert len([line for line in recipe.splitlines() if line[:3] in {f"{i}. " for i in range(1, 10)}]) == 7
    snakefile = (REPO / "Snakefile").read_text()
    for step, row in STEPS.items():
        rule = (REPO / "rules" / f"{step}.smk").read_text()
        consumes_nothing = row.shared  # a data set's step: no experiment's steps upstream of it
        assert (f'unpack(step_inputs("{step}"))' in rule) != consumes_nothing, step
        assert f'step_manifest("{step}")' in rule, step
        assert (f'step_config("{step}")' in rule) == bool(row.sections), f"rule {step} passes other config sections"
        assert f'include: "rules/{step}.smk"' in snakefile, step
        assert (REPO / "scripts" / f"{step}.py").is_file()
        runner = (REPO / "src/streetvision/phases" / f"{step}.py").read_text()
        assert f'STEP = "{step}"' in runner and f'log_result("{step}"' not in runner, f"phases/{step}.py: name it once"
        assert row.folder == step or f'"{row.folder}"' not in runner, f"phases/{step}.py spells its folder itself"
        assert f"| `{step}`" in text


def test_license_packaging_and_commands_users_copy_are_current():
    """LICENSE matches pyproject's MIT; the SLURM profile's 2.x option names need plugin >= 2; the tracking
    extra brings every tracker train.loggers offers; the README pushes with `hf upload`."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"} and (REPO / "LICENSE").read_text().startswith("MIT License")
    assert "snakemake-executor-plugin-slurm>=2" in project["dependencies"]
    tracking = {requirement.split(">")[0] for requirement in project["optional-dependencies"]["tracking"]}
    assert {"tensorboard", "mlflow-skinny", "sqlalchemy", "alembic", "wandb"} <= tracking
    readme = (REPO / "README.md").read_text()
    assert "hf upload you/roadwork-v1" in readme and "huggingface-cli upload" not in readme
