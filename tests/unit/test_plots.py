"""mlhub.plots: pure plotting of step series into PNG files."""

from __future__ import annotations

import pytest

from mlhub.errors import ValidationError
from mlhub.plots import is_loss_key, plot_curves, plot_loss_and_metrics, split_loss_and_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


CURVES = {"loss": [(0, 1.0), (1, 0.6), (2, 0.4)], "val_loss": [(0, 1.1), (1, 0.8), (2, 0.7)],
          "val_accuracy": [(0, 0.5), (1, 0.7), (2, 0.8)]}


def test_plot_curves_writes_a_real_png_and_returns_its_resolved_path(tmp_path):
    out = plot_curves({"loss": CURVES["loss"]}, tmp_path / "loss.png", "one panel")
    assert out == (tmp_path / "loss.png").resolve()
    width, height = _png_size(out)
    assert (width, height) == (600, 380) and out.stat().st_size > 5_000


def test_two_panel_plot_is_twice_as_wide_as_a_one_kind_plot(tmp_path):
    both = plot_loss_and_metrics(CURVES, tmp_path / "both.png", "run 1")
    only_loss = plot_loss_and_metrics({k: CURVES[k] for k in ("loss", "val_loss")}, tmp_path / "l.png", "run 1")
    assert _png_size(both)[0] == 2 * _png_size(only_loss)[0]


def test_a_png_is_written_whatever_the_file_suffix(tmp_path):
    out = plot_curves(CURVES, tmp_path / "curves.out", "t")
    assert out.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("series", [{}, {"loss": []}, {"loss": [], "val_accuracy": []},
                                    {"loss": [(0, float("nan"))]}])
def test_nothing_to_plot_is_a_clear_error_and_writes_nothing(tmp_path, series):
    for fn in (plot_curves, plot_loss_and_metrics):
        with pytest.raises(ValidationError, match="nothing to plot"):
            fn(series, tmp_path / "x.png", "t")
    assert list(tmp_path.iterdir()) == []


def test_non_numeric_points_are_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="'loss'.*pairs"):
        plot_curves({"loss": [(0, "high")]}, tmp_path / "x.png", "t")


def test_a_missing_folder_or_a_folder_as_target_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        plot_curves(CURVES, tmp_path / "nope" / "x.png", "t")
    with pytest.raises(ValidationError, match="it is a folder"):
        plot_curves(CURVES, tmp_path, "t")


def test_empty_series_beside_full_ones_are_left_out(tmp_path):
    out = plot_loss_and_metrics({"loss": CURVES["loss"], "val_accuracy": []}, tmp_path / "x.png", "t")
    one = plot_curves({"loss": CURVES["loss"]}, tmp_path / "y.png", "t")
    assert _png_size(out)[0] == _png_size(one)[0]  # one panel: no empty metrics panel


def test_loss_keys_are_told_from_metric_keys():
    assert [k for k in ("loss", "val_loss", "train_loss", "loss/val", "val_accuracy", "lossy", "rmse", "closs")
            if is_loss_key(k)] == ["loss", "val_loss", "train_loss", "loss/val"]
    assert split_loss_and_metrics(["val_accuracy", "loss", "val_loss", "f1"]) == (
        ["loss", "val_loss"], ["val_accuracy", "f1"])
