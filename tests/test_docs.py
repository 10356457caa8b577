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
    svg = subprocess.run(["dot", "-Tsvg"], input=dag.stdout, capture_output=True, text=True, check=True).stdout
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
