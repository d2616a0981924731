"""What `hpsearch export` says about the model it saved (search/train/export.py); the command
itself, end to end, is tests/test_export.py."""

from __future__ import annotations

import pytest

from search.errors import ConfigError
from search.train.export import Exported, check_out


def _exported(retrained: float, seeded: bool) -> Exported:
    return Exported("s", 3, {"lr": 0.01, "units": 64}, 2, "b.keras", "val_accuracy", 0.8226, retrained, seeded, 1.3, {"accuracy": 0.75})


def test_the_line_says_whether_the_weights_are_the_trials_own():
    assert _exported(0.8226, True).text() == ("saved trial 3 of study 's' to b.keras: lr 0.01, units 64; trained again for 2 epochs in 1.3 s, "
                                              "val_accuracy 0.8226, test accuracy 0.75 (the trial recorded 0.8226: its own weights)")
    assert "the run again differs slightly" in _exported(0.8216, True).text()
    unseeded = _exported(0.7765, False).text()
    assert "the study has no --seed, so these weights are a new draw" in unseeded and "--seed exports each trial's own" in unseeded


def test_out_must_be_a_keras_file_in_a_folder_that_exists(tmp_path):
    assert check_out(str(tmp_path / "m.keras")) == tmp_path / "m.keras"
    for out, fragment in ((tmp_path / "m.h5", "ending in .keras"), (tmp_path / "no" / "m.keras", "does not exist"),
                          (tmp_path, "ending in .keras")):
        with pytest.raises(ConfigError, match=fragment):
            check_out(str(out))
    (tmp_path / "d.keras").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        check_out(str(tmp_path / "d.keras"))
