"""docs/extending.md: its worked examples (a dataset reader, a search engine, a similarity) run
in order, and the parts they register work through the registries."""

import re
from pathlib import Path

import pytest

from adah.data.registry import DATASETS
from adah.index.backends import ENGINES
from adah.models.gates import GATES
from adah.training.similarity import SIMILARITIES

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def forget_the_examples():
    for registry, name in ((DATASETS, "stripes"), (ENGINES, "brute"), (SIMILARITIES, "same_first_label"),
                           (GATES, "sigmoid_sum")):
        registry.remove(name)


@pytest.fixture()
def clean_registries():
    forget_the_examples()  # tests/test_docs.py runs the same blocks
    yield
    forget_the_examples()


def test_the_worked_examples_run_and_register_their_parts(clean_registries):
    assert len(blocks()) == 4
    for k, code in enumerate(blocks()):
        exec(compile(code, f"{DOC}:block{k + 1}", "exec"), {"__name__": f"extending_{k}"})
    assert "stripes" in DATASETS and "brute" in ENGINES and "same_first_label" in SIMILARITIES
    assert "sigmoid_sum" in GATES
