"""The examples in the docstrings run and print what they say (as librosa's documentation does)."""
import doctest
import importlib

import pytest

MODULES = ["eval.recall", "eval.auc", "features.frontend", "features.taggram", "features.rhythm", "train.tag_samplers",
           "train.dist", "train.models", "train.losses"]  # those with examples that run here (the rest are +SKIP)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0
