"""Reading a user's vector pairs: formats, checks with clear errors, splits, standardisation."""
import numpy as np
import pytest
import torch

from infodiff_lightning.data.vector_pairs import VectorPairData, check_vector_pairs, read_vector_pairs


@pytest.fixture
def pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    return x, x[:, :2] + rng.normal(size=(200, 2))


def test_npz_npy_and_parquet_give_the_same_arrays(tmp_path, pairs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = pairs
    np.savez(tmp_path / "p.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    cols = {**{f"x{j}": x[:, j] for j in range(3)}, **{f"y{j}": y[:, j] for j in range(2)}, "label": np.zeros(200)}
    pq.write_table(pa.table(cols), tmp_path / "p.parquet")
    for got in (read_vector_pairs(str(tmp_path / "p.npz")),
                read_vector_pairs(str(tmp_path / "x.npy"), str(tmp_path / "y.npy")),
                read_vector_pairs(str(tmp_path / "p.parquet"))):  # default: columns named x*, y*
        np.testing.assert_array_equal(got[0], x)
        np.testing.assert_array_equal(got[1], y)


def test_parquet_columns_can_be_named(tmp_path, pairs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = pairs
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": y[:, 0]}), tmp_path / "t.parquet")
    gx, gy = read_vector_pairs(str(tmp_path / "t.parquet"), x_columns=["a", "b"], y_columns=["c"])
    assert gx.shape == (200, 2) and gy.shape == (200, 1)
    with pytest.raises(ValueError, match=r"y_columns \['d'\] not among the columns"):
        read_vector_pairs(str(tmp_path / "t.parquet"), x_columns=["a"], y_columns=["d"])


def test_a_one_dimensional_array_is_one_column(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.arange(20.0), y=np.arange(20.0) ** 2)
    x, y = read_vector_pairs(str(tmp_path / "p.npz"))
    assert x.shape == (20, 1) and y.shape == (20, 1)


def test_mismatched_row_counts_are_an_error_naming_the_file(tmp_path, pairs):
    np.savez(tmp_path / "p.npz", x=pairs[0], y=pairs[1][:150])
    with pytest.raises(ValueError, match=r"p\.npz: x has 200 rows but y has 150"):
        VectorPairData(str(tmp_path / "p.npz"))


def test_nan_rows_are_an_error_naming_the_first_bad_row(tmp_path, pairs):
    x, y = pairs
    y = y.copy()
    y[17, 1] = np.nan
    y[40, 0] = np.inf
    np.savez(tmp_path / "p.npz", x=x, y=y)
    with pytest.raises(ValueError, match=r"y has 2 rows with NaN or infinite entries \(first: row 17\)"):
        VectorPairData(str(tmp_path / "p.npz"))


def test_a_constant_column_is_an_error_naming_the_column(tmp_path, pairs):
    x, y = pairs
    x = x.copy()
    x[:, 2] = 4.0
    np.savez(tmp_path / "p.npz", x=x, y=y)
    with pytest.raises(ValueError, match=r"x column 2 is constant \(4\.0\)"):
        VectorPairData(str(tmp_path / "p.npz"))


def test_wrong_files_and_keys_are_clear_errors(tmp_path, pairs):
    np.savez(tmp_path / "p.npz", a=pairs[0], y=pairs[1])
    with pytest.raises(ValueError, match=r"no array 'x' \(x_key\); the file holds \['a', 'y'\]"):
        read_vector_pairs(str(tmp_path / "p.npz"))
    with pytest.raises(FileNotFoundError, match="x: no such file"):
        read_vector_pairs(str(tmp_path / "missing.npz"))
    (tmp_path / "p.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"not a \.npz, \.npy or \.parquet file"):
        read_vector_pairs(str(tmp_path / "p.csv"))
    np.save(tmp_path / "x.npy", pairs[0])
    with pytest.raises(ValueError, match="give the other variable's .npy file as y"):
        read_vector_pairs(str(tmp_path / "x.npy"))
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="expected real numbers"):
        check_vector_pairs(*read_vector_pairs(str(tmp_path / "s.npy"), str(tmp_path / "s.npy")), source="s")


def test_split_is_fixed_by_the_seed_and_disjoint(tmp_path, pairs):
    np.savez(tmp_path / "p.npz", x=pairs[0], y=pairs[1])
    a, b = VectorPairData(str(tmp_path / "p.npz"), seed=3), VectorPairData(str(tmp_path / "p.npz"), seed=3)
    assert torch.equal(a.split_ids["val"], b.split_ids["val"])
    val, train = set(a.split_ids["val"].tolist()), set(a.split_ids["train"].tolist())
    assert len(val) == 40 and len(train) == 160 and not val & train  # one of 5 folds of 200 rows


def test_the_folds_partition_the_rows(tmp_path, pairs):
    # Cross-fitting: over all folds every row is held out exactly once.
    np.savez(tmp_path / "p.npz", x=pairs[0], y=pairs[1])
    held = [VectorPairData(str(tmp_path / "p.npz"), folds=3, fold=k).split_ids["val"] for k in range(3)]
    assert sorted(torch.cat(held).tolist()) == list(range(200))
    with pytest.raises(ValueError, match=r"fold must be in \[0, 3\), got 3"):
        VectorPairData(str(tmp_path / "p.npz"), folds=3, fold=3)


def test_standardisation_uses_the_training_split_only(tmp_path, pairs):
    x, y = pairs
    np.savez(tmp_path / "p.npz", x=x * 5 + 2, y=y)
    dm = VectorPairData(str(tmp_path / "p.npz"))
    std = dm.normalization()
    train = dm.split_ids["train"]
    z = std.x(torch.from_numpy(x * 5 + 2)[train])
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert not torch.allclose(std.mean_x, torch.from_numpy(x * 5 + 2).mean(0))  # the held-out rows are not used


def test_cross_fitting_weights_each_fold_by_its_pairs():
    from infodiff_lightning.crossfit import combine_folds

    # Two folds of 300 and 100 pairs: the pooled mean is (300*1 + 100*2)/400 = 1.25, and the
    # pooled variance of the mean is (300^2 0.1^2 + 100^2 0.2^2)/400^2 = 1300/160000.
    mean, se, n = combine_folds([(1.0, 0.1, 300), (2.0, 0.2, 100)])
    assert n == 400 and mean == pytest.approx(1.25) and se == pytest.approx((1300 / 160000) ** 0.5)


def test_normalization_can_be_turned_off(tmp_path, pairs):
    np.savez(tmp_path / "p.npz", x=pairs[0] * 5 + 2, y=pairs[1])
    std = VectorPairData(str(tmp_path / "p.npz"), normalization="none").normalization()
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(std.x(x), x)


def test_gaussianize_gives_normal_scores_and_stays_increasing_beyond_the_data():
    from infodiff_lightning.data.normalization import Gaussianization

    # Cauchy columns (no finite variance): after the map each is close to N(0, 1) on the
    # training rows, and the map is strictly increasing on the whole line, inside and
    # far outside the training range (so it is invertible and I(X;Y) is unchanged).
    x = torch.distributions.StudentT(1.0).sample((4000, 2)).double()
    g = Gaussianization.fit(x, x[:, :1])
    z = g.x(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2, dtype=torch.float64), atol=0.02, rtol=0)
    line = torch.linspace(-1e5, 1e5, 200001, dtype=torch.float64)[:, None].repeat(1, 2)
    assert bool((g.x(line).diff(dim=0) > 0).all())


def test_gaussianize_keeps_the_null_condition_null():
    from infodiff_lightning.data.normalization import Gaussianization

    g = Gaussianization.fit(torch.randn(100, 1, dtype=torch.float64), torch.randn(100, 2, dtype=torch.float64))
    y = torch.tensor([[float("nan"), float("nan")], [0.0, 1.0]], dtype=torch.float64)
    out = g.y(y)
    assert bool(torch.isnan(out[0]).all()) and bool(torch.isfinite(out[1]).all())


def test_an_unknown_normalization_is_an_error(tmp_path, pairs):
    np.savez(tmp_path / "p.npz", x=pairs[0], y=pairs[1])
    with pytest.raises(ValueError, match="normalization must be one of"):
        VectorPairData(str(tmp_path / "p.npz"), normalization="rank")
