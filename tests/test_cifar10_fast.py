"""The pieces of the cifar10-fast recipe, each against a plain reference: alternating flips
and reflected translations, Muon, the whitening layer, test-time augmentation, the recipe."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_dataset

from convkit.api import Evaluation, rescaled_recipe
from convkit.data import Batches, Split
from convkit.data.arrays import channel_stats, to_float
from convkit.data.augment import FlipTranslate, LowResolutionStart
from convkit.errors import ConfigError
from convkit.models import create_model
from convkit.models.tta import TTA_MODES, TestTimeAugmented, least_confident, with_tta
from convkit.runs import Run
from convkit.train import TrainConfig, resume, train
from convkit.train.optim import Muon, build_optimizer, build_schedule, newton_schulz
from convkit.train.recipes import RECIPES
from convkit.train.runner import evaluate_run
from convkit.use.export import export_onnx
from convkit.use.onnx_model import OnnxClassifier
from convkit.use.predict import open_predictor

# ---- alternating flips and reflected translations -----------------------------------------------


def test_flip_translate_is_a_reflected_shift_of_each_image_mirrored_every_other_epoch():
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    idx = torch.randperm(32)
    g = torch.Generator().manual_seed(5)
    aug = FlipTranslate(32, 2, g, seed=9)
    ref = F.pad(images[idx].float(), (2, 2, 2, 2), mode="reflect")  # what reflect padding gives
    mirrored = {}
    for epoch in (1, 2, 3):
        shifts = torch.Generator().set_state(g.get_state())  # the draws the call will make
        dy = torch.randint(-2, 3, (32,), generator=shifts)
        dx = torch.randint(-2, 3, (32,), generator=shifts)
        out = aug(images[idx], idx, epoch)
        assert out.shape == (32, 3, 8, 8) and out.dtype == torch.uint8
        for i in range(32):
            crop = ref[i, :, 2 + dy[i] : 10 + dy[i], 2 + dx[i] : 10 + dx[i]]
            if torch.equal(out[i].float(), crop):
                flipped = False
            else:
                assert torch.equal(out[i].float(), crop.flip(-1)), f"image {i}, epoch {epoch}"
                flipped = True
            mirrored.setdefault(int(idx[i]), []).append(flipped)
    assert all(a != b and a == c for a, b, c in mirrored.values())  # every other epoch
    first = [m[0] for m in mirrored.values()]
    assert 4 < sum(first) < 28  # each image starts mirrored or not at random
    again = FlipTranslate(32, 2, torch.Generator(), seed=9)
    assert torch.equal(again.start_flipped, aug.start_flipped)  # from the seed: a resume agrees


def test_batches_tell_the_augmentation_which_images_and_which_epoch():
    split = Split(torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8), torch.arange(10))
    seen = []

    def record(x, idx, epoch):
        seen.append((idx.tolist(), epoch))
        assert torch.equal(x, split.images[idx])
        return x

    batches = Batches(split, 4, shuffle=True, generator=torch.Generator(), augment=record)
    batches.epoch = 7
    labels = torch.cat([y for _, y in batches])
    assert sorted(sum((i for i, _ in seen), [])) == list(range(10))
    assert {e for _, e in seen} == {7} and labels.tolist() == sum((i for i, _ in seen), [])


def test_low_resolution_start_crops_the_first_epochs_only():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    idx = torch.arange(6)
    aug = LowResolutionStart(None, 5, 2, torch.Generator().manual_seed(0))
    for epoch in (1, 2):
        out = aug(images, idx, epoch)
        assert out.shape == (6, 3, 5, 5)
        for i in range(6):  # each is a 5 x 5 window of its own image
            windows = images[i].unfold(1, 5, 1).unfold(2, 5, 1).permute(1, 2, 0, 3, 4)
            assert any(torch.equal(out[i], w) for w in windows.reshape(-1, 3, 5, 5))
    assert torch.equal(aug(images, idx, 3), images)
    with pytest.raises(ConfigError, match="--low-res N"):
        TrainConfig(low_res=24)


# ---- Muon ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 576), (2304, 256), (10, 10)])
def test_newton_schulz_keeps_the_singular_vectors_and_brings_the_values_near_one(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x = newton_schulz(g).float()
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    values = torch.linalg.svdvals(x)
    assert x.shape == g.shape and values.min() > 0.5 and values.max() < 1.5
    # x = U S' V^T with the same U, V: U^T x V is diagonal
    inner = u.T @ x @ vh.T
    off = inner - torch.diag(torch.diagonal(inner))
    assert off.abs().max() < 0.05


def test_a_muon_step_normalises_each_filter_bank_then_steps_along_the_orthogonalised_momentum():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
    v = torch.nn.Parameter(torch.randn(8))
    opt = Muon(
        [dict(params=[w], lr=0.1, momentum=0.6, orthogonalize=True),
         dict(params=[v], lr=0.5, weight_decay=0.01)],
        momentum=0.85, nesterov=True,
    )  # fmt: skip
    ref_w, ref_v = w.detach().clone(), v.detach().clone()
    buf_w, buf_v = torch.zeros_like(ref_w), torch.zeros_like(ref_v)
    for _ in range(3):
        gw, gv = torch.randn(8, 3, 3, 3), torch.randn(8)
        w.grad, v.grad = gw.clone(), gv.clone()
        opt.step()
        buf_w = 0.6 * buf_w + gw
        update = newton_schulz((gw + 0.6 * buf_w).reshape(8, -1)).float().view(8, 3, 3, 3)
        ref_w = ref_w * (8**0.5 / ref_w.norm()) - 0.1 * update
        gv = gv + 0.01 * ref_v  # SGD with L2, Nesterov
        buf_v = 0.85 * buf_v + gv
        ref_v = ref_v - 0.5 * (gv + 0.85 * buf_v)
        assert torch.allclose(w, ref_w, atol=1e-5) and torch.allclose(v, ref_v, atol=1e-6)


def test_muon_state_dict_round_trip_continues_exactly():
    def make():
        torch.manual_seed(1)
        model = create_model("cifar10-fast", num_classes=4, in_channels=1, input_size=(12, 12))
        cfg = TrainConfig(optimizer="muon", lr=0.2, lr_bias=1.0, lr_head=3.0, weight_decay=1e-3)
        params = [p for p in model.parameters() if p.requires_grad]
        return model, build_optimizer(cfg, params)

    def steps(model, opt, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            x, y = torch.randn(16, 1, 12, 12, generator=g), torch.randint(0, 4, (16,), generator=g)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()

    a, opt_a = make()
    steps(a, opt_a, 2, 0)
    b, opt_b = make()
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(opt_a.state_dict())
    steps(a, opt_a, 2, 1)
    steps(b, opt_b, 2, 1)
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_muon_groups_parameters_by_shape_and_needs_its_rates():
    model = create_model("cifar10-fast")
    cfg = TrainConfig(optimizer="muon", lr=0.24, lr_bias=106.0, lr_head=1340.0, weight_decay=0.004)
    opt = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    filters, head, bias = opt.param_groups
    assert filters["orthogonalize"] and all(p.ndim == 4 for p in filters["params"])
    assert len(filters["params"]) == 6  # two convolutions a block; the whitening one is fixed
    assert head["params"] == [model.classifier.weight] and head["lr"] == 1340.0
    assert len(bias["params"]) == 7 and all(p.ndim == 1 for p in bias["params"])  # 6 BN + whiten
    assert head["weight_decay"] * head["lr"] == pytest.approx(0.004)  # decay per step at peak
    assert bias["weight_decay"] * bias["lr"] == pytest.approx(0.004)
    schedule = build_schedule(cfg.replace(schedule="linear", epochs=2), opt, 5)
    for _ in range(5):
        schedule.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.12, 670.0, 53.0])
    with pytest.raises(ConfigError, match="lr-bias and --lr-head"):
        TrainConfig(optimizer="muon", lr=0.2)
    for bad in (dict(momentum=0.0), dict(muon_momentum=1.0)):
        name = next(iter(bad))
        with pytest.raises(ConfigError, match=f"expected 0 < {name} < 1"):
            TrainConfig(optimizer="muon", lr=0.2, lr_bias=1.0, lr_head=1.0, **bad)


@pytest.mark.parametrize("schedule", ["linear", "constant", "step"])
def test_whiten_bias_epochs_trains_the_whitening_bias_for_its_epochs_only(schedule):
    model = create_model("cifar10-fast")
    cfg = TrainConfig(optimizer="muon", lr=0.24, lr_bias=106.0, lr_head=1340.0, epochs=4,
                      weight_decay=0.004, whiten_bias_epochs=1.5, schedule=schedule)  # fmt: skip
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(cfg, trainable, whiten_bias=model.whiten.bias)
    filters, head, bias, whiten = opt.param_groups
    assert whiten["params"] == [model.whiten.bias] and whiten["train_epochs"] == 1.5
    assert len(bias["params"]) == 6 and not any(p is model.whiten.bias for p in bias["params"])
    assert whiten["weight_decay"] * whiten["lr"] == pytest.approx(0.004)
    schedule = build_schedule(cfg, opt, 10)  # 1.5 epochs of 10 steps: 15 steps
    others = []
    for step in range(1, 41):
        schedule.step()
        assert whiten["lr"] == pytest.approx(106.0 * max(0.0, 1 - step / 15))
        others.append(bias["lr"])
    assert bias["lr"] == pytest.approx(0.0 if cfg.schedule == "linear" else 106.0 * (
        0.01 if cfg.schedule == "step" else 1.0))  # fmt: skip
    # trained for nothing after its steps: a Muon step leaves it where it was
    model.whiten.bias.grad = torch.ones_like(model.whiten.bias)
    before = model.whiten.bias.detach().clone()
    opt.step()
    assert torch.equal(model.whiten.bias.detach(), before)
    # without the setting, or without the parameter, the groups are as before
    assert len(build_optimizer(cfg.replace(whiten_bias_epochs=0.0), trainable,
                               whiten_bias=model.whiten.bias).param_groups) == 3  # fmt: skip
    assert len(build_optimizer(cfg, trainable).param_groups) == 3


def test_a_run_trains_the_whitening_bias_for_its_epochs_and_resumes_with_it_frozen(tmp_path):
    settings = dict(model="cifar10-fast", dataset="tiny", batch_size=40, epochs=1,
                    precision="fp32", optimizer="muon", lr=0.2, lr_bias=2.0, lr_head=20.0,
                    schedule="linear", val_split=0.0, keep="last", normalize="standardize")  # fmt: skip
    biases = {}
    for whiten_epochs in (1.0, 0.0):
        cfg = TrainConfig.from_dict({**settings, "whiten_bias_epochs": whiten_epochs})
        folder = tmp_path / f"run{whiten_epochs}"
        train(cfg, data=tiny_dataset(), out=folder)
        first = Run(folder).kept_model().model
        resume(folder, {"epochs": 2}, data=tiny_dataset())
        second = Run(folder).kept_model().model
        biases[whiten_epochs] = (first.whiten.bias.detach(), second.whiten.bias.detach())
        assert not torch.equal(first.classifier.weight, second.classifier.weight)
    assert torch.equal(*biases[1.0])  # trained in epoch 1 only
    assert not torch.equal(*biases[0.0])  # trained in both
    assert not torch.equal(biases[1.0][0], torch.zeros_like(biases[1.0][0]))


def test_whiten_bias_epochs_is_refused_where_it_cannot_apply(tmp_path):
    muon = dict(optimizer="muon", lr=0.2, lr_bias=2.0, lr_head=20.0, whiten_bias_epochs=1.0)
    with pytest.raises(ConfigError, match="use --optimizer muon"):
        TrainConfig(**{**muon, "optimizer": "sgd"})
    with pytest.raises(ConfigError, match="schedule=plateau does not"):
        TrainConfig(**muon, schedule="plateau", val_split=0.1)
    with pytest.raises(ConfigError, match="expected whiten_bias_epochs >= 0"):
        TrainConfig(**{**muon, "whiten_bias_epochs": -1.0})
    with pytest.raises(ConfigError, match="expected whiten_bias_epochs <= epochs"):
        TrainConfig(**{**muon, "whiten_bias_epochs": 3.5}, epochs=3)
    model = create_model("cifar10-fast")
    held = [p for p in model.parameters() if p.requires_grad and p is not model.whiten.bias]
    with pytest.raises(ConfigError, match="not among the parameters trained"):
        build_optimizer(TrainConfig(**muon), held, whiten_bias=model.whiten.bias)
    cfg = TrainConfig.from_dict({"model": "resnet20", "dataset": "tiny", "epochs": 1, **muon})
    with pytest.raises(ConfigError, match="resnet20 does not have"):
        train(cfg, data=tiny_dataset(), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---- the whitening layer and test-time augmentation ---------------------------------------------


def test_fit_whitening_makes_the_patches_uncorrelated_with_unit_variance():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 3, 16, 16, generator=g)
    images = F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="reflect"), 3, stride=1)  # correlated
    images = images + 0.5 * images.mean(dim=1, keepdim=True)  # and across channels
    model = create_model("cifar10-fast", input_size=(16, 16))
    model.fit_whitening(images, eps=0.0)
    out = model.whiten(images)[:, :12] - model.whiten.bias[:12, None, None]  # the + half
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=0.05)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad


def test_tta_averages_the_logits_of_the_mirrored_and_shifted_views():
    torch.manual_seed(0)
    model = create_model("cifar10-fast", input_size=(16, 16)).eval()
    x = torch.randn(5, 3, 16, 16)
    assert with_tta(model, "none") is model
    with torch.no_grad():

        def mirror(v):
            return 0.5 * (model(v) + model(v.flip(-1)))

        assert torch.allclose(TestTimeAugmented(model, "flip")(x), mirror(x), atol=1e-5)

        # the two shifted views, pixel by pixel: out[r, c] = x[r - d, c - d], mirrored back in
        # at the border (row -1 is row 1, row 16 is row 14)
        def shifted(d):
            i = [abs(r - d) if r - d < 16 else 30 - (r - d) for r in range(16)]
            return x[:, :, i][:, :, :, i]

        ref = 0.5 * mirror(x) + 0.25 * mirror(shifted(1)) + 0.25 * mirror(shifted(-1))
        assert torch.allclose(TestTimeAugmented(model, "flip-translate")(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="tta"):
        TestTimeAugmented(model, "rotate")


def test_selective_tta_gives_the_six_views_to_the_least_confident_share_only():
    torch.manual_seed(0)
    model = create_model("cifar10-fast", input_size=(16, 16)).eval()
    x = torch.randn(40, 3, 16, 16)
    with torch.no_grad():
        plain, six = model(x), TestTimeAugmented(model, "flip-translate")(x)
        out = TestTimeAugmented(model, "selective")(x)
        confidence = plain.softmax(-1).amax(-1)
        picked = torch.zeros(40, dtype=torch.bool)
        picked[confidence.argsort()[:6]] = True  # ceil(0.15 * 40) = 6, the least confident
        assert torch.allclose(out[picked], six[picked], atol=1e-5)
        assert torch.equal(out[~picked], plain[~picked])
        assert not torch.allclose(out[picked], plain[picked], atol=1e-3)
        # one image alone is the least confident of its batch: it gets all six views
        assert torch.allclose(TestTimeAugmented(model, "selective")(x[:1]), six[:1], atol=1e-5)
        assert TestTimeAugmented(model, "selective")(x[:0]).shape == (0, 10)


@pytest.mark.parametrize(("n", "share", "expected"), [(40, 0.15, 6), (41, 0.15, 7), (1, 0.15, 1),
                                                      (20, 1.0, 20), (7, 0.5, 4)])  # fmt: skip
def test_least_confident_picks_the_ceiling_of_the_share_and_every_tie(n, share, expected):
    logits = torch.randn(n, 10, generator=torch.Generator().manual_seed(n))
    assert int(least_confident(logits, share).sum()) == expected
    tied = torch.zeros(n, 10)  # every row equally (un)confident: all go in
    assert bool(least_confident(tied, share).all())


def test_the_tta_modes_are_the_settings_choices():
    (tta,) = (f for f in dataclasses.fields(TrainConfig) if f.name == "tta")
    assert tta.metadata["choices"] == TTA_MODES


# ---- the recipe ---------------------------------------------------------------------------------


def recipe_config(overrides: dict) -> TrainConfig:
    """cifar10-fast with `overrides`, as `convkit train cifar10-fast --epochs N ...` resolves
    them (on the tiny data, which train_config would not accept as a dataset name)."""
    recipe = rescaled_recipe(RECIPES["cifar10-fast"].settings_dict(), [("test", overrides)],
                             set(overrides))  # fmt: skip
    return TrainConfig.from_dict({**recipe, **overrides})


def test_the_recipe_trains_whitened_muon_tta_on_tiny_data_and_tests_with_tta(tmp_path, capsys):
    cfg = recipe_config(
        {"dataset": "tiny", "batch_size": 40, "epochs": 3, "precision": "fp32",
         "lr_bias": 0.053 * 40, "lr_head": 0.67 * 40}  # the recipe's rates for a batch of 40
    )  # fmt: skip
    assert (cfg.low_res_epochs, cfg.whiten_bias_epochs) == (1, 1.125)  # the recipe, shortened
    result = train(cfg, data=tiny_dataset(), out=tmp_path / "run")
    assert result["test_accuracy"] >= 0.9 and result["config"]["tta"] == "flip-translate"
    assert "(test-time augmentation: flip-translate)" in capsys.readouterr().out
    # The whitening layer was fitted on the first training images, as training saw them.
    kept = Run(tmp_path / "run").kept_model()
    train_images = tiny_dataset().train.images
    mean, std = channel_stats(Split(train_images, torch.zeros(len(train_images))))
    fresh = create_model("cifar10-fast", num_classes=4, in_channels=1, input_size=(28, 28))
    fresh.fit_whitening(to_float(train_images[:5000], mean, std))
    assert torch.allclose(kept.model.whiten.weight, fresh.whiten.weight, atol=1e-6)
    # Prediction and the exported file answer as the run was tested: with the 6 views.
    images = tiny_dataset().test.images[:12]
    with torch.no_grad():
        logits = TestTimeAugmented(kept.model.eval(), "flip-translate")(kept.preprocess(images))
    expected = torch.softmax(logits, dim=1).numpy()
    predicted = open_predictor(tmp_path / "run").probabilities(images.numpy())
    assert np.abs(predicted - expected).max() < 1e-5
    report = export_onnx(tmp_path / "run", check_images=images, log=lambda line: None)
    exported = OnnxClassifier(report.path).probabilities(images.numpy())
    assert report.passed and np.abs(exported - expected).max() < 1e-4
    # evaluate tests with the run's own views unless told otherwise, the folder unchanged
    data, log = tiny_dataset(), lambda line: None
    own = evaluate_run(tmp_path / "run", data=data, log=log)
    assert own["tta"] == "flip-translate" and own["test_loss"] == pytest.approx(result["test_loss"])
    plain = evaluate_run(tmp_path / "run", data=data, tta="none", log=log)
    assert plain["tta"] == "none" and plain["test_loss"] != pytest.approx(own["test_loss"])
    assert Run(tmp_path / "run").config().tta == "flip-translate"
    assert "test set (test-time augmentation: flip-translate): loss" in repr(Evaluation(own))
    assert "test set: loss" in repr(Evaluation(plain))


def test_a_planned_length_keeps_the_recipes_low_resolution_and_whitening_bias_shares(
    tmp_path, capsys, monkeypatch
):
    import convkit.train.runner as runner

    sizes, short = [], []  # what the augmentation and the schedule were given
    crop = LowResolutionStart.__call__

    def recording_crop(self, images, indices, epoch):
        out = crop(self, images, indices, epoch)
        sizes.append((epoch, out.shape[-1]))
        return out

    def recording_schedule(cfg, optimizer, steps_per_epoch):
        short.extend(g["train_epochs"] for g in optimizer.param_groups if "train_epochs" in g)
        return build_schedule(cfg, optimizer, steps_per_epoch)

    monkeypatch.setattr(LowResolutionStart, "__call__", recording_crop)
    monkeypatch.setattr(runner, "build_schedule", recording_schedule)
    cfg = recipe_config(  # 240 images, 6 steps of 40 an epoch: 12 steps plan 2 epochs
        {"dataset": "tiny", "batch_size": 40, "plan_steps": 12, "precision": "fp32",
         "lr_bias": 0.053 * 40, "lr_head": 0.67 * 40}
    )  # fmt: skip
    assert (cfg.epochs, cfg.low_res_epochs, cfg.whiten_bias_epochs) == (8, 3, 3.0)
    train(cfg, data=tiny_dataset(), out=tmp_path / "run")
    assert "2 epochs = 12 steps, the first 1 on 26-pixel crops" in capsys.readouterr().out
    saved = Run(tmp_path / "run").config()
    assert (saved.epochs, saved.low_res_epochs, saved.whiten_bias_epochs) == (2, 1, 0.75)
    assert {size for epoch, size in sizes if epoch == 1} == {26}
    assert {size for epoch, size in sizes if epoch == 2} == {28}
    assert short == [0.75]


def test_a_selective_tta_run_tests_predicts_and_exports_with_the_same_views(tmp_path, capsys):
    cfg = recipe_config(
        {"dataset": "tiny", "batch_size": 40, "epochs": 1, "precision": "fp32",
         "lr_bias": 0.053 * 40, "lr_head": 0.67 * 40, "tta": "selective"}
    )  # fmt: skip
    train(cfg, data=tiny_dataset(), out=tmp_path / "run")
    assert "(test-time augmentation: selective)" in capsys.readouterr().out
    kept = Run(tmp_path / "run").kept_model()
    images = tiny_dataset().test.images[:20]
    report = export_onnx(tmp_path / "run", check_images=images, log=lambda line: None)
    assert report.passed
    for batch in (images, images[:7], images[:1]):  # 3, 2 and 1 images get the six views
        with torch.no_grad():
            logits = TestTimeAugmented(kept.model.eval(), "selective")(kept.preprocess(batch))
        expected = torch.softmax(logits, dim=1).numpy()
        predicted = open_predictor(tmp_path / "run").probabilities(batch.numpy())
        assert np.abs(predicted - expected).max() < 1e-5
        exported = OnnxClassifier(report.path).probabilities(batch.numpy())
        assert np.abs(exported - expected).max() < 1e-4
    with torch.no_grad():  # and the views did change some of them
        plain = torch.softmax(kept.model.eval()(kept.preprocess(images)), dim=1).numpy()
    assert np.abs(exported[:1] - plain[:1]).max() > 1e-4


def test_progressive_resolution_trains_through_the_runner_and_bad_sizes_are_refused(tmp_path):
    data = tiny_dataset()
    muon = dict(optimizer="muon", lr=0.2, lr_bias=2.0, lr_head=20.0)
    cfg = TrainConfig.from_dict(
        {"model": "cifar10-fast", "dataset": "tiny", "epochs": 2, "batch_size": 40,
         "precision": "fp32", "low_res": 20, "low_res_epochs": 1, "val_split": 0.0,
         "keep": "last", "normalize": "standardize", **muon}
    )  # fmt: skip
    assert train(cfg, data=data, out=tmp_path / "run")["test_accuracy"] > 0.5
    bad = [
        (cfg.replace(low_res=28), r"low_res=28 crops nothing from 28x28 images"),
        (cfg.replace(low_res=6), r"low_res=6: cifar10-fast cannot take 6x6 crops"),
        (cfg.replace(model="mnist-cnn", optimizer="adam"), "cannot take 20x20 crops"),
        (cfg.replace(model="mnist-mlp", low_res=0, low_res_epochs=0), "optimizer=muon rescales"),
    ]
    for i, (wrong, message) in enumerate(bad):
        with pytest.raises(ConfigError, match=message):
            train(wrong, data=data, out=tmp_path / f"bad{i}")
        assert not (tmp_path / f"bad{i}").exists()  # refused before the folder is made
