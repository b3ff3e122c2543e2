"""Min-SNR loss weighting of DiffusionFineTuner (Hang et al. 2023), against its closed form.

With snr_t = abar_t / (1 - abar_t) from the scheduler's alphas_cumprod, the weight is
    min(snr, gamma) / snr        for epsilon prediction,
    min(snr, gamma) / (snr + 1)  for v prediction,
    min(snr, gamma)              for sample (x0) prediction.
The expected numbers are computed here in float64 straight from alphas_cumprod (not with
diffusers' compute_snr), at timesteps on both sides of the clipping point snr = gamma, so
a swapped branch or a missing clip gives a different number.
"""
import math

import pytest
import torch

from infodiff_lightning.models import TinyTextToImageSpec
from infodiff_lightning.modules import DiffusionFineTuner
from infodiff_lightning.training import min_snr_weight

WORDS = ["a", "red", "green", "square", "circle", "on", "the", "left", "right"]
GAMMA = 5.0
# The tiny model's schedule is DDPM "squaredcos_cap_v2" with 1000 steps; there
#   snr(100) = 34.2 and snr(200) = 8.78 lie above gamma = 5 (the clip is active),
#   snr(300) = 3.66, snr(500) = 0.97 and snr(900) = 0.024 lie below it (no clip).
CLIPPED, UNCLIPPED = [100, 200], [300, 500, 900]
TIMESTEPS = CLIPPED + UNCLIPPED


def scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler

    spec = TinyTextToImageSpec(words=WORDS)
    return DDPMScheduler(num_train_timesteps=spec.num_train_timesteps, beta_schedule=spec.beta_schedule,
                         prediction_type=prediction_type)


def closed_form_snr(sched, t: int) -> float:
    abar = float(sched.alphas_cumprod[t].double())
    return abar / (1.0 - abar)


def library_weight(sched, timesteps, prediction_type: str, gamma: float = GAMMA) -> list[float]:
    """What the module multiplies each sample's squared error by (its own snr, then the weight)."""
    from diffusers.training_utils import compute_snr

    return min_snr_weight(compute_snr(sched, torch.tensor(timesteps)), gamma, prediction_type).tolist()


def test_the_chosen_timesteps_straddle_the_clipping_point():
    # Guards the premise of the tests below: without timesteps on both sides of
    # snr = gamma a missing clip (or a clip always applied) would go unnoticed.
    sched = scheduler()
    assert all(closed_form_snr(sched, t) > GAMMA for t in CLIPPED)
    assert all(closed_form_snr(sched, t) < GAMMA for t in UNCLIPPED)


def test_epsilon_weight_is_min_snr_over_snr():
    # Above the clip: gamma / snr (5 / 34.2 = 0.146 at t=100); below it: snr / snr = 1.
    sched = scheduler("epsilon")
    expected = [min(s, GAMMA) / s for s in (closed_form_snr(sched, t) for t in TIMESTEPS)]
    assert library_weight(sched, TIMESTEPS, "epsilon") == pytest.approx(expected, rel=1e-5)
    assert expected[0] == pytest.approx(0.146, abs=1e-3) and expected[-1] == 1.0


def test_v_prediction_weight_is_min_snr_over_snr_plus_one():
    # Above the clip: gamma / (snr + 1) (5 / 35.2 = 0.142 at t=100); below it
    # snr / (snr + 1) (0.97 / 1.97 = 0.492 at t=500): never the epsilon weight 1.
    sched = scheduler("v_prediction")
    expected = [min(s, GAMMA) / (s + 1) for s in (closed_form_snr(sched, t) for t in TIMESTEPS)]
    assert library_weight(sched, TIMESTEPS, "v_prediction") == pytest.approx(expected, rel=1e-5)
    assert expected[0] == pytest.approx(0.142, abs=1e-3) and expected[3] == pytest.approx(0.492, abs=1e-3)


def test_sample_weight_is_min_snr_itself():
    # Above the clip the weight is gamma itself (5, not snr = 34.2 at t=100); below it
    # it is snr (0.024 at t=900).
    sched = scheduler("sample")
    expected = [min(s, GAMMA) for s in (closed_form_snr(sched, t) for t in TIMESTEPS)]
    assert library_weight(sched, TIMESTEPS, "sample") == pytest.approx(expected, rel=1e-5)
    assert expected[0] == GAMMA and expected[-1] == pytest.approx(0.0242, abs=1e-4)


def test_epsilon_weight_at_zero_terminal_snr_is_one_not_nan():
    # A zero-terminal-SNR schedule has abar_T = 0, so snr_T = 0 and min(snr, gamma)/snr is
    # 0/0; its limit as snr -> 0 is 1 (below the clip the epsilon weight is 1 everywhere).
    # A single NaN weight would make the whole batch loss NaN.
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, rescale_betas_zero_snr=True)
    assert float(sched.alphas_cumprod[-1]) == 0.0
    assert library_weight(sched, [998, 999], "epsilon") == [1.0, 1.0]
    assert library_weight(sched, [999], "v_prediction") == [0.0]  # 0 / (0 + 1)
    assert library_weight(sched, [999], "sample") == [0.0]


def test_unknown_prediction_type_is_rejected():
    with pytest.raises(ValueError, match="unsupported prediction_type"):
        min_snr_weight(torch.ones(2), GAMMA, "x0")


# ---- the weight as the module applies it: through DiffusionFineTuner.loss ---------------

@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def tuners():
    return {kind: DiffusionFineTuner(scratch=TinyTextToImageSpec(words=WORDS, image_size=8, prediction_type=kind),
                                     caption_dropout=0.0)
            for kind in ("epsilon", "v_prediction", "sample")}


def loss_and_timestep(module: DiffusionFineTuner, gamma: float | None, seed: int = 0) -> tuple[float, int]:
    """The loss of one fixed image at the timestep the module draws, and that timestep."""
    seen = []
    hook = module.backbone.register_forward_pre_hook(lambda m, args: seen.append(int(args[1])))
    module.hparams.min_snr_gamma = gamma
    images = torch.linspace(-1, 1, 3 * 8 * 8).reshape(1, 3, 8, 8)
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            loss = float(module.loss(images, ["a red square on the left"]))
    finally:
        hook.remove()
    return loss, seen[0]


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("side", ["clipped", "unclipped"])
def test_loss_multiplies_the_squared_error_by_the_min_snr_weight(tuners, kind, side):
    # One sample, the same seed with and without Min-SNR: the noise, the timestep t and
    # the squared error are the same, so the weighted loss over the plain one is exactly
    # the weight at t. gamma is set at half (clip active) or twice (no clip) snr_t, so
    # the ratio is 0.5 / 1 (epsilon), 0.5 snr/(snr+1) / snr/(snr+1) (v), 0.5 snr / snr (sample).
    module = tuners[kind]
    plain, t = loss_and_timestep(module, None)
    snr = closed_form_snr(module.adapter.scheduler, t)
    gamma = snr * (0.5 if side == "clipped" else 2.0)
    weighted, t_again = loss_and_timestep(module, gamma)
    assert t_again == t and math.isfinite(plain) and plain > 0
    expected = {"epsilon": min(snr, gamma) / snr, "v_prediction": min(snr, gamma) / (snr + 1),
                "sample": min(snr, gamma)}[kind]
    assert weighted / plain == pytest.approx(expected, rel=1e-5)
