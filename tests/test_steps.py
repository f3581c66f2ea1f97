"""What a step's cache key sees: input files by content, including the user's files a params section names."""

from __future__ import annotations

import numpy as np

from tinyopt.params import DataParams, ModelParams
from tinyopt.steps import _fingerprint


def test_a_params_section_naming_a_file_changes_key_when_the_file_changes(tmp_path):
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=np.zeros((4, 2)), y_train=np.zeros(4), x_test=np.zeros((2, 2)), y_test=np.zeros(2))
    params = DataParams(dataset="npz", path=str(data))
    before = _fingerprint(params)
    assert _fingerprint(params) == before  # same file, same key
    np.savez(data, x_train=np.ones((4, 2)), y_train=np.zeros(4), x_test=np.zeros((2, 2)), y_test=np.zeros(2))
    assert _fingerprint(params) != before  # new data at the same path: the steps run again

    model = tmp_path / "model.h5"
    model.write_bytes(b"v1")
    first = _fingerprint(ModelParams(path=str(model)))
    model.write_bytes(b"v2")
    assert _fingerprint(ModelParams(path=str(model))) != first
    assert _fingerprint(DataParams()) == DataParams().model_dump_json()  # no path: the settings alone
