"""The flow models' own sampler (analyses/regeneration.py): Euler on the flow path over
the denoiser protocol, as diffusers' FlowMatchEulerDiscreteScheduler steps."""
import torch

from infodiff_lightning.analyses.regeneration import flow_euler_sample, flow_sigmas
from infodiff_lightning.denoisers import CorrelatedGaussian
from infodiff_lightning.denoisers.gaussian_flow import FlowMatchingGaussian


def scheduler_config(shift: float = 3.0) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return dict(FlowMatchEulerDiscreteScheduler(shift=shift).config)


def test_flow_sigmas_are_the_schedulers_shifted_sigmas_with_the_first_inside_the_trained_range():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(10)
    ours = flow_sigmas(scheduler_config(3.0), 10)
    # the scheduler starts at s = 1 (alpha = -inf); ours at 1 - 1/1000, the rest identical
    assert float(sched.sigmas[0]) == 1.0 and float(ours[0]) == 0.999
    torch.testing.assert_close(ours[1:], sched.sigmas[1:].double())


def test_euler_over_the_protocol_is_the_diffusers_flow_scheduler_loop():
    # the exact velocity model of a Gaussian called directly by diffusers' scheduler, and
    # flow_euler_sample going through eps_hat (x -> x/k, eq. F4 inverted): one trajectory
    from diffusers import FlowMatchEulerDiscreteScheduler

    flow = FlowMatchingGaussian(CorrelatedGaussian(dim=3, correlation=0.5, mean=0.7, spread=2.0))
    sigmas = flow_sigmas(scheduler_config(3.0), 12)
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)  # set_timesteps(sigmas=) shifts what it is given
    sched.set_timesteps(sigmas=sigmas[:-1].tolist())  # the same grid, its terminal 0 appended by diffusers
    torch.testing.assert_close(sched.sigmas.double(), sigmas, atol=1e-6, rtol=0)  # float32 inside diffusers
    noise = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    null = flow.null_conditions(5)
    x = noise.clone()
    for t in sched.timesteps:
        v = flow.velocity(x, torch.full((5,), float(t), dtype=torch.float64), null)
        x = sched.step(v, t, x).prev_sample
    ours = flow_euler_sample(flow, noise, null, sigmas)
    torch.testing.assert_close(ours, x, atol=1e-6, rtol=1e-6)  # diffusers keeps sigmas in float32


def test_euler_with_the_exact_velocity_of_a_point_mass_lands_on_it():
    # X = mu almost surely: v = eps - mu is exact, each Euler step is exact on the straight
    # path, so the sampler returns mu (up to the 1/1000 of noise left by the clipped first step)
    flow = FlowMatchingGaussian(CorrelatedGaussian(dim=2, correlation=0.0, mean=3.0, scale=1e-4, rotate=False))
    noise = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = flow_euler_sample(flow, noise, flow.null_conditions(4), flow_sigmas(scheduler_config(1.0), 20))
    torch.testing.assert_close(out, torch.full_like(out, 3.0), atol=1e-2, rtol=0)
