"""The examples in the docstrings run and print what they say (as librosa's documentation does)."""
import doctest
import importlib

import pytest

MODULES = ["eval.recall", "eval.auc", "features.frontend", "features.taggram", "features.tfcheckpoint",
           "features.rhythm", "train.tag_samplers", "train.dist", "train.models", "train.losses", "data.files"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0
