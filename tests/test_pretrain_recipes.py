"""The iBOT, KoLeo and Gram-anchoring options of ``dinotrack pretrain`` in the training loop:
the default recipe computes DINO's loss exactly as before, each option adds its term, runs
with options resume exactly, and the flags are checked and recorded."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from pretrain_support import SHORT_VIDEOS, tiny_config
from test_pretrain_train import states_equal

from pretrain.checkpoint import load_checkpoint, save_checkpoint
from pretrain.cli import add_arguments, config_from_args, main
from pretrain.config import RecipeConfig
from pretrain.distributed import setup
from pretrain.loss import DINOLoss
from pretrain.model import build_networks, resolve_backbone
from pretrain.train import Trainer, train

SPEC = "test_vit_tiny"


@pytest.fixture
def videos(shared_data):
    return [shared_data("videos", name) for name in SHORT_VIDEOS]


def views_of_a_batch():
    gen = torch.Generator().manual_seed(0)
    views = [torch.randn(2, 3, 32, 32, generator=gen) for _ in range(2)]
    return views + [torch.randn(2, 3, 16, 16, generator=gen) for _ in range(2)]


def first_step(tmp_path, recipe: RecipeConfig) -> tuple[Trainer, dict[str, float]]:
    cfg = tiny_config(tmp_path, [tmp_path], recipe=recipe)
    trainer = Trainer(cfg, setup("cpu"), resolve_backbone(SPEC), 2)
    torch.manual_seed(0)
    return trainer, trainer.train_step(views_of_a_batch())


def test_default_recipe_is_dino_loss_exactly(tmp_path):
    trainer, metrics = first_step(tmp_path, RecipeConfig())
    # The same step written out from DINO's parts alone.
    cfg = trainer.cfg
    student, teacher = build_networks(resolve_backbone(SPEC), cfg.model, cfg.seed)
    views = views_of_a_batch()
    loss_fn = DINOLoss(cfg.model.out_dim, len(views), cfg.optim.student_temp)
    torch.manual_seed(0)  # the same stochastic depth draws
    with torch.no_grad():
        expected = loss_fn(student(views), teacher(views[:2]), cfg.optim.warmup_teacher_temp)
    assert metrics["loss"] == expected.loss.item()
    assert not {"dino_loss", "ibot_loss", "koleo_loss", "gram_loss"} & set(metrics)
    state = trainer.state_dict()
    assert not {"patch_loss", "gram_anchor"} & set(state)
    assert not any("mask_token" in name or "patch_head" in name for name in state["student"])


def test_koleo_and_a_gram_anchor_add_terms_to_the_same_dino_loss(tmp_path):
    _, plain = first_step(tmp_path, RecipeConfig())
    recipe = RecipeConfig(koleo_weight=0.1, gram_weight=2.0)
    trainer, metrics = first_step(tmp_path, recipe)
    assert metrics["dino_loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert metrics["koleo_loss"] > 0
    # At step 0 the anchor is the teacher itself: the student differs by its dropout only.
    assert 0 <= metrics["gram_loss"] < 0.05
    expected = metrics["dino_loss"] + 0.1 * metrics["koleo_loss"] + 2.0 * metrics["gram_loss"]
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)
    assert trainer.gram_anchor_step == 0


@pytest.mark.parametrize("separate", [False, True])
def test_ibot_masks_the_student_and_scores_patches(tmp_path, separate):
    recipe = RecipeConfig(ibot_weight=1.0, ibot_separate_head=separate, ibot_mask_p=1.0)
    trainer, metrics = first_step(tmp_path, recipe)
    assert math.isfinite(metrics["ibot_loss"]) and metrics["ibot_loss"] > 0
    assert metrics["loss"] == pytest.approx(metrics["dino_loss"] + metrics["ibot_loss"], rel=1e-6)
    student = trainer.student_net
    assert student.mask_token.grad is not None and student.mask_token.grad.abs().sum() > 0
    assert hasattr(student, "patch_head") == separate
    assert trainer.patch_loss.center.abs().sum() > 0  # its own centre moved


def test_gram_anchor_starts_late_and_is_refreshed(tmp_path):
    recipe = RecipeConfig(gram_weight=1.0, gram_start=2, gram_update_every=2)
    cfg = tiny_config(tmp_path, [tmp_path], recipe=recipe)
    trainer = Trainer(cfg, setup("cpu"), resolve_backbone(SPEC), 2)
    seen = []
    for _ in range(5):
        metrics = trainer.train_step(views_of_a_batch())
        seen.append(("gram_loss" in metrics, trainer.gram_anchor_step))
    assert seen == [(False, -1), (False, -1), (True, 2), (True, 2), (True, 4)]


def test_run_with_every_option_resumes_exactly(videos, tmp_path):
    recipe = RecipeConfig(ibot_weight=1.0, koleo_weight=0.1, gram_weight=1.0, gram_start=1)
    train(tiny_config(tmp_path / "whole", videos, max_steps=3, recipe=recipe))
    parts = tmp_path / "parts"
    assert train(tiny_config(parts, videos, max_steps=2, recipe=recipe)).step == 2
    assert train(tiny_config(parts, videos, max_steps=3, recipe=recipe)).resumed_from == 2
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pth")
    b = load_checkpoint(parts / "checkpoint.pth")
    for key in ("student", "teacher", "loss", "patch_loss", "gram_anchor", "gram_anchor_step"):
        states_equal(a[key], b[key], key)
    log = [json.loads(line) for line in (parts / "log.jsonl").read_text().splitlines()]
    assert all("ibot_loss" in r and "koleo_loss" in r for r in log)
    assert ["gram_loss" in r for r in log] == [False, True, True]
    config = json.loads((parts / "config.json").read_text())["config"]
    assert config["recipe"]["ibot_weight"] == 1.0 and config["recipe"]["gram_start"] == 1
    with pytest.raises(ValueError, match=r"recipe.koleo_weight: 0.1 -> 0.2"):
        changed = RecipeConfig(ibot_weight=1.0, koleo_weight=0.2, gram_weight=1.0, gram_start=1)
        train(tiny_config(parts, videos, max_steps=4, recipe=changed))


def test_checkpoint_of_a_version_without_recipes_resumes(videos, tmp_path):
    run = tmp_path / "old"
    train(tiny_config(run, videos, max_steps=1))
    ckpt = load_checkpoint(run / "checkpoint.pth")
    del ckpt["config"]["recipe"]  # as written before the options existed
    save_checkpoint(run / "checkpoint.pth", ckpt)
    assert train(tiny_config(run, videos, max_steps=2)).resumed_from == 1


def test_recipe_flags_reach_the_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--data", "x", "--ibot-weight", "0.5", "--ibot-mask-ratio", "0.2", "0.4"]
    args += ["--ibot-mask-p", "0.25", "--ibot-separate-head", "--koleo-weight", "0.1"]
    args += ["--gram-weight", "2", "--gram-start", "100", "--gram-update-every", "50"]
    assert config_from_args(parser.parse_args(args)).recipe == RecipeConfig(
        0.5, (0.2, 0.4), 0.25, True, 0.1, 2.0, 100, 50
    )
    assert config_from_args(parser.parse_args(["--data", "x"])).recipe == RecipeConfig()


def test_out_of_range_recipe_flags_are_one_line(capsys, tmp_path):
    for flags, message in (
        (["--ibot-weight", "-1"], "--ibot-weight must be 0 (off) or positive"),
        (["--ibot-mask-ratio", "0.5", "0.2"], "--ibot-mask-ratio needs 0 <= MIN <= MAX < 1"),
        (["--ibot-weight", "1", "--ibot-mask-ratio", "0", "0"], "nothing would be masked"),
        (["--ibot-mask-p", "0"], "--ibot-mask-p must be in (0, 1]"),
        (["--koleo-weight", "0.1", "--batch-size", "1"], "--koleo-weight needs --batch-size 2"),
        (["--gram-weight", "-2"], "--gram-weight must be 0 (off) or positive"),
        (["--gram-start", "-1"], "--gram-start must be 0 or more"),
        (["--gram-update-every", "-5"], "--gram-update-every must be 0 (never) or positive"),
    ):
        code = main(["--data", str(tmp_path), "--epochs", "20", *flags])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.distributed
def test_two_gloo_processes_with_every_option_stay_in_sync(videos, tmp_path):
    import torch.multiprocessing as mp
    from pretrain_support import distributed_rank
    from test_pretrain_distributed import free_port

    recipe = RecipeConfig(ibot_weight=1.0, koleo_weight=0.1, gram_weight=1.0, gram_start=1)
    cfg = tiny_config(
        tmp_path / "run", videos, max_steps=2, data={"frames_per_video": 4}, recipe=recipe
    )
    mp.spawn(distributed_rank, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    assert any("mask_token" in key for key in ranks[0]["teacher"])
    for key, value in ranks[0]["teacher"].items():
        assert torch.equal(value, ranks[1]["teacher"][key]), key
    assert ranks[0]["loss"] == ranks[1]["loss"]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert ckpt["patch_loss"]["center"].abs().sum() > 0 and ckpt["gram_anchor_step"] == 1
