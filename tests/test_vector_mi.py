"""I(X;Y) of a user's vector pairs: training a denoiser, saving it, estimating with it.

Ground truth: jointly Gaussian (X, Y), whose I(X;Y) = 1/2 (log det S_xx - log det S_x|y)
is known in closed form, and whose exact denoiser (JointGaussian) can stand in for the
network."""
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import analyze
import train
from infodiff_lightning.data.normalization import Standardization
from infodiff_lightning.data.vector_pairs import VectorPairData
from infodiff_lightning.denoisers import CorrelatedGaussian, JointGaussian
from infodiff_lightning.denoisers.vector import NormalizedDenoiser, load_vector_denoiser
from infodiff_lightning.models.vector_mlp import ConditionalMLP
from infodiff_lightning.modules import VectorInformation, VectorMITrainer

ROOT = Path(__file__).resolve().parents[1]
TRAIN, ANALYZE = str(ROOT / "configs/train/vector_mi.yaml"), str(ROOT / "configs/analyze/vector_mi.yaml")


def gaussian_file(path: Path, system: CorrelatedGaussian, n: int, scale: float = 3.0, shift: float = -2.0) -> Path:
    # An affine map of each variable leaves I(X;Y) unchanged; it checks that standardisation is applied.
    x, y = system.sample(n, torch.Generator().manual_seed(0))
    np.savez(path, x=x.numpy() * scale + shift, y=y.numpy())
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short run of the shipped recipe (configs/train/vector_mi.yaml), then its analysis."""
    tmp = tmp_path_factory.mktemp("vector_mi")
    system = CorrelatedGaussian(dim=3, correlation=0.8, spread=2.0, seed=1)  # I = -3/2 log(0.36) = 1.532 nats
    data = str(gaussian_file(tmp / "pairs.npz", system, 5000))
    model = tmp / "model"
    rc = train.main(["fit", "--config", TRAIN, "--data.x", data, "--trainer.max_steps", "1500",
                     "--trainer.val_check_interval", "500", "--model.export_dir", str(model),
                     "--trainer.default_root_dir", str(tmp / "train"), "--trainer.logger.init_args.save_dir",
                     str(tmp / "train"), "--trainer.enable_progress_bar", "false"])
    assert rc == 0
    rc = analyze.main(["--config", ANALYZE, "--data.x", data, "--model.model", str(model),
                       "--model.truth", str(system.analytic_mi), "--trainer.default_root_dir", str(tmp / "analyze"),
                       "--trainer.logger.init_args.save_dir", str(tmp / "analyze"), "--trainer.enable_progress_bar",
                       "false"])
    assert rc == 0
    [run] = (tmp / "analyze" / "vector_mi").glob("run-*")
    return {"tmp": tmp, "data": data, "model": model, "system": system, "run": run}


def test_short_training_estimates_the_gaussian_mi_within_10_percent(trained):
    summary = json.loads((trained["run"] / "summary.json").read_text())
    assert summary["truth_nats"] == pytest.approx(-1.5 * math.log(1 - 0.64))
    assert summary["samples"]["total"] == 1000  # the held-out 20% of 5000 pairs
    for form in ("standard", "orthogonal"):
        r = summary["estimators"][form]
        assert abs(r["relative_error"]) < 0.10, (form, r)
        assert 0 < r["stderr"] < 0.1  # per-pair spread of i(x;y) over 1000 pairs, plus the draws


def test_training_logs_the_held_out_information_to_tensorboard(trained):
    [version] = (trained["tmp"] / "train" / "vector_mi").glob("version_*")
    acc = EventAccumulator(str(version))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss", "val/loss", "val/mi_standard", "val/mi_orthogonal", "val/mi_standard_stderr"):
        assert tag in tags
    mi = [s.value for s in acc.Scalars("val/mi_orthogonal")]
    assert len(mi) == 3 and mi[-1] > 0.8 * trained["system"].analytic_mi  # one value per validation, learned


def test_the_saved_denoiser_predicts_what_the_module_predicts(tmp_path):
    torch.manual_seed(0)
    module = VectorMITrainer(width=32, depth=1, ema_decay=None)
    std = Standardization(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5]), torch.tensor([3.0]), torch.tensor([4.0]))
    module.build(2, 1, std, (torch.randn(50, 2, dtype=torch.float64) * 2 + 1, torch.randn(50, 1, dtype=torch.float64) * 4 + 3))
    torch.nn.init.normal_(module.net.out[-1].weight)  # a non-trivial network (the last layer starts at zero)
    module.save_denoiser(tmp_path / "m")
    x, y, alpha = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64), torch.randn(5)
    y[2] = float("nan")  # one null condition
    live, saved = module.denoiser, load_vector_denoiser(tmp_path / "m").denoiser
    torch.testing.assert_close(saved.encode(x), live.encode(x))
    torch.testing.assert_close(saved.eps_hat(x, alpha, y), live.eps_hat(x, alpha, y))
    assert saved.alpha_range == (-8.0, 8.0)  # the default sampler's range, saved with the model


def test_an_untrained_network_is_the_exact_denoiser_of_the_fitted_gaussian():
    # The last layer starts at zero, so the output is the baseline: the optimal denoiser of a Gaussian (GaussianBaseline) for the mean
    # and (shrunk) covariance of the pairs. With 20000 jointly Gaussian pairs these are
    # close to the truth, so the output is close to the exact denoiser, conditional and null.
    system = CorrelatedGaussian(dim=3, correlation=0.8, spread=2.0, seed=1)
    x, y = system.sample(20000, torch.Generator().manual_seed(0))
    net = ConditionalMLP(3, 3, width=8, depth=1)
    net.fit_baseline(x, y)
    g = torch.Generator().manual_seed(1)
    xa, alpha = torch.randn(64, 3, generator=g, dtype=torch.float64), 4 * torch.randn(64, generator=g, dtype=torch.float64)
    cond = torch.randn(64, 3, generator=g, dtype=torch.float64)
    cond[::2] = float("nan")  # every other row: the null condition
    out = net(xa.float(), alpha.float(), cond.float()).double()
    torch.testing.assert_close(out, system.eps_hat(xa, alpha, cond), atol=0.03, rtol=0)


def test_a_partly_null_condition_row_is_an_error():
    net = ConditionalMLP(2, 2, width=8, depth=1)
    y = torch.tensor([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="partly NaN"):
        net(torch.zeros(1, 2), torch.zeros(1), y)


class _ExactInformation(VectorInformation):
    """The job with the exact denoiser of the standardised Gaussian in place of a network."""

    def __init__(self, denoiser, dims, **kw):
        self._exact = denoiser, dims
        super().__init__(model="exact", **kw)

    def load(self, model):
        den, dims = self._exact
        return den, torch.nn.Identity(), dims


def test_the_job_with_the_exact_denoiser_recovers_the_truth_within_3_standard_errors(tmp_path):
    # I(X;Y) is 0.3 nats per coordinate pair; with the optimal denoiser the estimate is
    # unbiased, so it lies within 3 of its standard errors of the truth.
    system = CorrelatedGaussian(dim=2, correlation=0.7, spread=3.0, seed=2)
    data = VectorPairData(str(gaussian_file(tmp_path / "p.npz", system, 3000)), eval_split="all")
    std = data.normalization()
    # The Gaussian of the standardised variables: (v - m) / s is Gaussian with mean (mu - m) / s, cov S / s s^T.
    m = torch.cat([std.mean_x, std.mean_y])
    s = torch.cat([std.std_x, std.std_y])
    mu_raw = torch.cat([system.mean[:2] * 3.0 - 2.0, system.mean[2:]])
    cov_raw = system.cov.clone()
    cov_raw[:2] *= 3.0
    cov_raw[:, :2] *= 3.0
    exact = JointGaussian((mu_raw - m) / s, cov_raw / torch.outer(s, s), dim_x=2)
    job = _ExactInformation(NormalizedDenoiser(exact, std), data.dims, truth=system.analytic_mi, n_draws=16)
    L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path / "run")).test(job, datamodule=data,
                                                                                                 verbose=False)
    for form in ("standard", "orthogonal"):
        r = job.summary["estimators"][form]
        assert r["samples"] == 3000
        assert abs(r["z"]) < 3, (form, r)


def test_analysis_of_pairs_with_other_dimensions_is_a_configuration_error(trained, tmp_path, capsys):
    np.savez(tmp_path / "other.npz", x=np.random.default_rng(0).normal(size=(100, 2)),
             y=np.random.default_rng(1).normal(size=(100, 3)))
    rc = analyze.main(["--config", ANALYZE, "--data.x", str(tmp_path / "other.npz"), "--model.model",
                       str(trained["model"]), "--trainer.default_root_dir", str(tmp_path / "a"),
                       "--trainer.logger.init_args.save_dir", str(tmp_path / "a")])
    assert rc == 2
    assert "the pairs have dims (2, 3) (x, y) but the model" in capsys.readouterr().err


def test_bad_pairs_fail_the_training_command_in_one_line(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(100, 2))
    x[5, 0] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=np.random.default_rng(1).normal(size=(100, 1)))
    rc = train.main(["fit", "--config", TRAIN, "--data.x", str(tmp_path / "bad.npz"),
                     "--trainer.default_root_dir", str(tmp_path / "t"), "--trainer.logger.init_args.save_dir",
                     str(tmp_path / "t")])
    assert rc == 2
    assert "x has 1 rows with NaN or infinite entries (first: row 5)" in capsys.readouterr().err


def test_the_auto_baseline_is_the_fitted_gaussian_from_20_dimensions_on():
    # dim_x + dim_y >= BASELINE_MIN_DIMS (20): pairs are few for their dimension and the
    # fitted Gaussian is the better start; below it the network learns the whole denoiser.
    from infodiff_lightning.modules.vector_training import BASELINE_MIN_DIMS, VectorMITrainer, uses_gaussian_baseline

    assert BASELINE_MIN_DIMS == 20
    assert not uses_gaussian_baseline("auto", 1, 1) and not uses_gaussian_baseline("auto", 10, 9)
    assert uses_gaussian_baseline("auto", 10, 10) and uses_gaussian_baseline("auto", 50, 50)
    assert uses_gaussian_baseline(True, 1, 1) and not uses_gaussian_baseline(False, 50, 50)
    with pytest.raises(ValueError, match="gaussian_baseline must be true, false or auto"):
        VectorMITrainer(gaussian_baseline="sometimes")
