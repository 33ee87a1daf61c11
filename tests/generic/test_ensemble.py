"""The generic ensemble: any torch modules, mean and spread per output, training, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pal_atoms.core.errors import InputError
from pal_atoms.generic import Ensemble, TrainingSettings, mlp
from pal_atoms.generic.training import EnsembleTrainer


class TinyCNN(torch.nn.Module):
    """A CNN on an 8x8 'geometry' image predicting two scalars (the thermo-fluid shape)."""

    def __init__(self, inputs, outputs):
        super().__init__()
        assert inputs == {"geometry": (8, 8)}
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.SiLU(), torch.nn.AdaptiveAvgPool2d(2)
        )
        self.head = torch.nn.Linear(16, len(outputs))
        self.names = list(outputs)

    def forward(self, batch):
        z = self.conv(batch["geometry"].unsqueeze(1)).flatten(1)
        y = self.head(z)
        return {k: y[:, i] for i, k in enumerate(self.names)}


def data_1d(n: int, lo: float = -1.0, hi: float = 1.0, seed: int = 0) -> list[dict]:
    x = np.random.default_rng(seed).uniform(lo, hi, n)
    return [{"x": np.array([v]), "y": np.array(np.sin(3 * v))} for v in x]


def test_any_module_predicts_mean_and_spread_per_output():
    ens = Ensemble(TinyCNN, members=3, inputs={"geometry": (8, 8)}, outputs={"cf": (), "st": ()})
    samples = [{"geometry": np.random.default_rng(i).random((8, 8))} for i in range(5)]
    pred = ens.predict(samples)
    assert set(pred) == {"cf", "st"}
    assert pred["cf"].mean.shape == (5,) and pred["st"].std.shape == (5,)
    assert np.all(pred["cf"].std > 0)  # differently seeded members disagree
    (r, *_) = ens.predict_batch(samples)
    assert set(r) == {"mean", "std", "uncertainty"} and r["uncertainty"] > 0
    trainer = EnsembleTrainer(ens, TrainingSettings(epochs=5))
    labels = [{**s, "cf": np.array(1.0), "st": np.array(2.0)} for s in samples]
    trainer.train(labels)


def test_training_fits_the_labels_and_the_spread_grows_away_from_them():
    ens = Ensemble(
        mlp((32, 32)),
        members=4,
        inputs={"x": (1,)},
        outputs={"y": ()},
        training=TrainingSettings(epochs=300),
    )
    train = data_1d(64)
    before = ens.test_error(data_1d(50, seed=1))
    ens.default_trainer().train(train)
    after = ens.test_error(data_1d(50, seed=1))
    assert after < 0.1 < before
    inside = ens.predict(data_1d(50, seed=2))["y"].std.mean()
    outside = ens.predict(data_1d(50, 3.0, 4.0, seed=2))["y"].std.mean()
    assert outside > 3 * inside


def test_a_saved_ensemble_loads_with_the_same_predictions(tmp_path):
    ens = Ensemble(
        mlp((8,)),
        members=2,
        inputs={"x": (1,)},
        outputs={"y": ()},
        training=TrainingSettings(epochs=20),
    )
    ens.default_trainer().train(data_1d(16))
    path = ens.save(tmp_path / "committee")
    back = Ensemble.load(path, mlp((8,)))
    probe = data_1d(7, seed=5)
    np.testing.assert_allclose(back.predict(probe)["y"].mean, ens.predict(probe)["y"].mean)
    np.testing.assert_allclose(back.label_scale, ens.label_scale)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a pal-atoms ensemble"):
        Ensemble.load(tmp_path / "other.pt", mlp((8,)))


def test_weights_of_some_members_move_between_committees():
    a = Ensemble(mlp((8,)), members=3, inputs={"x": (1,)}, outputs={"y": ()}, seed=0)
    b = Ensemble(mlp((8,)), members=3, inputs={"x": (1,)}, outputs={"y": ()}, seed=10)
    b.set_weights([a.get_weights()[1]], members=[1])
    probe = data_1d(4)
    np.testing.assert_allclose(b._raw(probe)[1], a._raw(probe)[1])
    assert not np.allclose(b._raw(probe)[0], a._raw(probe)[0])


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"members": 1}, "members >= 2"),
        ({"make_model": lambda i, o: "not a module"}, "torch.nn.Module"),
    ],
)
def test_bad_ensembles_say_why(kwargs, text):
    args = {"make_model": mlp(), "members": 2, "inputs": {"x": (1,)}, "outputs": {"y": ()}}
    args.update(kwargs)
    with pytest.raises(InputError, match=text):
        Ensemble(args.pop("make_model"), args.pop("members"), **args)


def test_training_settings_are_validated():
    with pytest.raises(InputError, match="epochs"):
        TrainingSettings(epochs=0)
    with pytest.raises(InputError, match="lr"):
        TrainingSettings(lr=-1.0)


def test_the_raster_cnn_is_flip_invariant_and_shift_invariant_along_the_channel():
    from pal_atoms.generic.models import RasterCNN

    torch.manual_seed(0)
    model = RasterCNN({"p": (2, 2)}, {"cf": (), "st": ()}, extent=(8.0, 1.0), pixels=(8, 64))
    pixel = 8.0 / 64
    points = torch.tensor([[[2.0, 0.3], [4.5, 0.7]]])
    mirrored = points * torch.tensor([1.0, -1.0]) + torch.tensor([0.0, 1.0])
    shifted = points + torch.tensor([3 * pixel, 0.0])
    moved_y = points + torch.tensor([0.0, 0.1])
    with torch.no_grad():
        ref, flip = model({"p": points}), model({"p": mirrored})
        shift, other = model({"p": shifted}), model({"p": moved_y})
    for k in ("cf", "st"):
        torch.testing.assert_close(flip[k], ref[k], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(shift[k], ref[k], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(other[k], ref[k], atol=1e-5)  # it does see the walls
