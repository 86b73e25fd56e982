"""Two processes on gloo: same teacher and centre on both ranks, global batch split."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import torch
import torch.multiprocessing as mp
from pretrain_support import SHORT_VIDEOS, distributed_rank, tiny_config

from pretrain.checkpoint import load_checkpoint
from pretrain.data import epoch_plan, find_sources
from pretrain.distributed import read_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_gloo_processes_stay_in_sync_and_split_the_batch(shared_data, tmp_path):
    videos = [shared_data("videos", name) for name in SHORT_VIDEOS]
    # 8 samples per epoch, 2 per process per step: 2 steps per epoch; run 3 steps.
    cfg = tiny_config(tmp_path / "run", videos, max_steps=3, data={"frames_per_video": 4})
    mp.spawn(distributed_rank, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    for key, value in ranks[0]["teacher"].items():
        assert torch.equal(value, ranks[1]["teacher"][key]), key
    assert torch.equal(ranks[0]["center"], ranks[1]["center"])
    assert ranks[0]["center"].abs().sum() > 0
    assert ranks[0]["loss"] == ranks[1]["loss"]  # averaged over the ranks

    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert ckpt["resolved"]["world_size"] == 2 and ckpt["resolved"]["global_batch"] == 4
    assert ckpt["resolved"]["steps_per_epoch"] == 2 and len(ckpt["rng"]) == 2
    for key, value in ckpt["teacher"].items():
        assert torch.equal(value, ranks[0]["teacher"][key]), key
    # Every step's global batch is the next 4 samples of the epoch's shuffled plan, two per
    # process, never the same sample twice.
    sources = find_sources(videos)
    for step in (1, 2, 3):
        epoch, j = divmod(step - 1, 2)
        plan = epoch_plan(sources, 4, 0, seed=cfg.seed, epoch=epoch)
        window = sorted(map(tuple, plan[j * 4 : (j + 1) * 4].tolist()))
        a, b = (ranks[r]["ids"][step].tolist() for r in range(2))
        assert len(a) == len(b) == 2
        assert sorted(map(tuple, a + b)) == window
        assert len(set(map(tuple, a + b))) == 4  # the clips are long enough: no repeats


@pytest.mark.distributed
def test_a_time_limit_on_one_rank_stops_every_rank_at_the_same_step(shared_data, tmp_path):
    videos = [shared_data("videos", name) for name in SHORT_VIDEOS]
    # Rank 0 has time left, rank 1 has none: they must agree to stop after the first step.
    base = tiny_config(tmp_path / "run", videos, max_steps=3, save_every=100, time_limit=1e9)
    cfgs = [base, dataclasses.replace(base, time_limit=0.0)]
    mp.spawn(distributed_rank, args=(2, free_port(), cfgs, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["step"] for r in ranks] == [1, 1]
    assert [r["timed_out"] for r in ranks] == [True, True]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pth")["step"] == 1


def test_half_set_environment_is_refused():
    assert read_env({}) is None
    assert read_env(
        {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    ) == (1, 2, 1)
    with pytest.raises(RuntimeError, match="RANK set but WORLD_SIZE, LOCAL_RANK, MASTER_ADDR"):
        read_env({"RANK": "0"})
    with pytest.raises(RuntimeError, match="inconsistent"):
        read_env(
            {
                "RANK": "2",
                "WORLD_SIZE": "2",
                "LOCAL_RANK": "0",
                "MASTER_ADDR": "h",
                "MASTER_PORT": "1",
            }
        )
