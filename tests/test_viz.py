"""Pictures for people: heat-map figures with a colour scale and the value, labelled MMSE axes."""
import matplotlib
import pytest
import torch

from infodiff_lightning.runs.viz import DISPLAY_SIZE, map_figure, mmse_figure


def test_map_figure_shows_image_map_with_colour_scale_and_overlay_at_display_size():
    fig = map_figure(torch.zeros(3, 16, 16), torch.rand(4, 4), "cmi/red = 0.531 +- 0.040 nats (image 7)")
    image_ax, map_ax, overlay_ax, colour_ax = fig.axes  # the colour bar is the fourth axes
    assert [image_ax.get_title(), map_ax.get_title(), overlay_ax.get_title()] == ["image", "map", "overlay"]
    assert colour_ax.get_ylabel() == "nats per element"
    assert fig._suptitle.get_text() == "cmi/red = 0.531 +- 0.040 nats (image 7)"
    # every panel is drawn at DISPLAY_SIZE pixels, whatever the map's resolution (4x4 here)
    assert image_ax.images[0].get_array().shape[:2] == (DISPLAY_SIZE, DISPLAY_SIZE)
    assert map_ax.images[0].get_array().shape == (DISPLAY_SIZE, DISPLAY_SIZE)
    matplotlib.pyplot.close(fig)


def test_negative_map_values_are_clipped_for_display_only():
    heat = torch.tensor([[-1.0, 2.0], [0.5, -0.2]])
    fig = map_figure(torch.zeros(3, 8, 8), heat, "synergy")
    assert float(fig.axes[1].images[0].get_array().min()) >= 0.0
    assert float(heat.min()) == -1.0
    matplotlib.pyplot.close(fig)


def test_mmse_figure_labels_its_axes_with_quantities_and_units():
    alphas = torch.linspace(-3, 3, 5)
    fig = mmse_figure(alphas, torch.rand(2, 5), ["null prompt", "caption"])
    left, right = fig.axes
    assert "log-SNR" in left.get_xlabel() and "MMSE" in left.get_ylabel()
    assert "nats" in right.get_ylabel()
    matplotlib.pyplot.close(fig)


def test_a_localization_figure_has_image_mask_and_one_panel_per_map():
    from infodiff_lightning.runs.viz import localization_figure

    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 2:5] = True
    fig = localization_figure(torch.zeros(3, 8, 8), mask, {"cmi": torch.rand(4, 4), "attention": torch.rand(4, 4)}, "t")
    assert [ax.get_title() for ax in fig.axes] == ["image", "mask", "cmi", "attention"]
    with pytest.raises(ValueError, match="at least one map"):
        localization_figure(torch.zeros(3, 8, 8), mask, {}, "t")


def test_a_ranking_figure_has_one_bar_per_candidate_true_caption_on_top():
    from infodiff_lightning.runs.viz import ranking_figure

    fig = ranking_figure(torch.zeros(3, 8, 8), ["a red ball", "a blue ball", "a ball red"], [1.0, 0.2, -0.1],
                         [0.1, 0.1, 0.1], "t")
    bars = fig.axes[1]
    by_height = sorted((t.get_position()[1], t.get_text()) for t in bars.get_yticklabels())
    assert [text for _, text in by_height] == ["a ball red", "a blue ball", "a red ball"]  # the true caption on top
    with pytest.raises(ValueError, match="one score and stderr per candidate"):
        ranking_figure(torch.zeros(3, 8, 8), ["a"], [1.0, 2.0], [0.1], "t")
