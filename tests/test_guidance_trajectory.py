"""Classifier-free guidance as a denoiser (analyses/guidance.py) and MI-TUNE's trajectory
score (analyses/trajectory_score.py), against direct computations."""
import pytest
import torch

from infodiff_lightning.analyses.guidance import GuidedDenoiser, cfg_eps
from infodiff_lightning.analyses.regeneration import regenerate, regeneration_grid
from infodiff_lightning.analyses.trajectory_score import TrajectoryScore, orthogonal_gap, training_timesteps
from infodiff_lightning.denoisers.gaussian import JointGaussian


@pytest.fixture
def gaussian():
    """x and y jointly Gaussian (2-D x, 1-D y): an exact denoiser with a null condition (NaN)."""
    cov = torch.tensor([[1.0, 0.2, 0.7], [0.2, 1.0, 0.5], [0.7, 0.5, 1.0]], dtype=torch.float64)
    return JointGaussian(torch.zeros(3, dtype=torch.float64), cov, dim_x=2)


def test_guided_prediction_is_eps_u_plus_w_times_the_conditional_difference(gaussian, gen):
    x, alpha = torch.randn(5, 2, generator=gen, dtype=torch.float64), torch.linspace(-3, 4, 5, dtype=torch.float64)
    y = torch.randn(5, 1, generator=gen, dtype=torch.float64)
    eps_c, eps_u = gaussian.eps_hat(x, alpha, y), gaussian.eps_hat(x, alpha, gaussian.null_conditions(5))
    guided = GuidedDenoiser(gaussian, 3.5).eps_hat(x, alpha, y)
    # the exact denoiser treats each row on its own: stacking both calls into one changes no bit
    assert torch.allclose(guided, eps_u + 3.5 * (eps_c - eps_u), rtol=0, atol=1e-14)


def test_guidance_1_returns_the_conditional_prediction_unchanged(gaussian, gen):
    x, alpha = torch.randn(4, 2, generator=gen, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    y = torch.randn(4, 1, generator=gen, dtype=torch.float64)
    seen = []
    guided = GuidedDenoiser(gaussian, 1.0, observer=lambda a, c, u: seen.append((c, u))).eps_hat(x, alpha, y)
    assert torch.equal(guided, seen[0][0])  # eps_c itself, not eps_u + 1 (eps_c - eps_u) rounded again
    assert torch.equal(cfg_eps(seen[0][0], seen[0][1], 1.0), seen[0][0])


def test_a_negative_guidance_scale_is_refused(gaussian):
    with pytest.raises(ValueError, match="guidance scale must be >= 0"):
        GuidedDenoiser(gaussian, -1.0)


def test_orthogonal_gap_is_the_squared_norm_of_the_difference_per_image():
    c, u = torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    c[0, 0, 0, 0], c[1] = 3.0, 1.0  # image 0: one element 3 apart (9); image 1: 12 elements 1 apart (12)
    assert orthogonal_gap(c, u).tolist() == [9.0, 12.0]


@pytest.fixture(scope="module")
def tiny_world_model(tmp_path_factory):
    from infodiff_lightning.denoisers import load_text_to_image
    from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components

    folder = tmp_path_factory.mktemp("tiny") / "model"
    # a DDPM scheduler without steps_offset: 20 DDIM steps visit t = 950, 900, ..., 50, 0
    save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=["a", "red", "blue", "square", "circle"],
                                                                 image_size=8)), folder)
    return load_text_to_image(str(folder))


def test_trajectory_score_equals_a_diffusers_ddim_loop_summing_the_gap_above_t_50(tiny_world_model, one_thread):
    # The direct computation: diffusers' DDIMScheduler steps the guided prediction, and the
    # gap ||eps_c - eps_u||^2 of its own two calls is summed where its timestep exceeds 50.
    from diffusers import DDIMScheduler

    from infodiff_lightning.logsnr import logsnr_from_alphas_cumprod

    den, steps, w = tiny_world_model, 20, 3.0
    prompts = ["a red square", "a blue circle"]
    noise = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(0))
    score = TrajectoryScore(training_timesteps(den))
    regenerate(GuidedDenoiser(den, w, observer=score), noise, prompts, regeneration_grid(den, steps))

    ddim = DDIMScheduler.from_config(den.scheduler.config)  # clip_sample as the model's config says, as regenerate
    ddim.set_timesteps(steps)
    assert ddim.timesteps.tolist()[-2:] == [50, 0]  # the boundary t = 50 is on the grid, and skipped
    lam = logsnr_from_alphas_cumprod(ddim.alphas_cumprod)
    x, direct, counted = noise.clone(), torch.zeros(2, dtype=torch.float64), 0
    for t in ddim.timesteps.tolist():
        a = torch.full((2,), float(lam[t]), dtype=torch.float64)
        eps_c, eps_u = den.eps_hat(x, a, prompts), den.eps_hat(x, a, ["", ""])
        if t > 50:
            direct += ((eps_c.double() - eps_u.double()) ** 2).flatten(1).sum(1)
            counted += 1
        x = ddim.step(eps_u + w * (eps_c - eps_u), t, x).prev_sample
    assert counted == 18 and score.steps == 18
    # two float32 implementations of one DDIM update (and calls of 2 vs 4 inputs) round
    # differently: the sums agree to 1e-7 relative (measured); a wrong grid, a wrong skip or
    # a missing square would be off by far more than the 1e-5 allowed
    assert torch.allclose(score.score, direct, rtol=1e-5, atol=0)


def test_skip_0_counts_every_step_but_t_0(tiny_world_model, one_thread):
    den = tiny_world_model
    score = TrajectoryScore(training_timesteps(den), skip=0)
    noise = torch.randn(1, *den.sample_shape, generator=torch.Generator().manual_seed(1))
    regenerate(GuidedDenoiser(den, 1.0, observer=score), noise, ["a red square"], regeneration_grid(den, 4))
    assert score.steps == 3  # t = 750, 500, 250 count; t = 0 is not above 0
