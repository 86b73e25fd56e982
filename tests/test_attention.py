"""Class-token attention: maps, mass thresholds, start masks, `dinotrack attention` and
`segment --auto`."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from cli_support import run_cli, tiny_flags
from PIL import Image

from dinotrack import AutoStart, auto_start_mask, mass_threshold
from dinotrack.cli import START_MASK_NAME, main
from dinotrack.cli.job import parse_box
from dinotrack.io.masks import read_mask, resize_mask
from dinotrack.io.video import iter_frames
from dinotrack.models.attention import normalize_attention, upsample_attention
from dinotrack.results.colour_map import colourize
from dinotrack.results.writer import RECORD_NAME as MARKER_NAME
from dinotrack.tracking.autostart import box_patches, kmeans

SHORT = 64
FAST = tiny_flags(SHORT)


@pytest.fixture
def tracker(tiny_tracker):
    return tiny_tracker(short_side=SHORT, batch_size=3)


def random_frames(n, height=50, width=70, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def run(args, capsys):
    code, _, err = run_cli(args, capsys)
    return code, err


# Maps.


def test_maps_are_distributions_over_patches(tracker):
    frames = random_frames(4)
    attn = tracker.attention(frames)
    gh, gw = (s // 8 for s in tracker.input_size(50, 70))
    assert attn.shape == (4, tracker.num_heads, gh, gw) and attn.dtype == torch.float32
    assert tracker.num_heads == 2  # test_vit_tiny's
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum((-2, -1)), torch.ones(4, 2), atol=1e-5, rtol=0)
    # Before renormalising, the class token and the patches share the mass: patches get < 1.
    extractor = tracker.extractor
    _, raw = extractor.forward(extractor.preprocess(frames, tracker.input_size(50, 70)), True)
    patch_share = raw.sum((-2, -1))
    assert (patch_share < 1).all() and (patch_share > 0).all()
    torch.testing.assert_close(normalize_attention(raw), attn, atol=1e-6, rtol=1e-5)
    up = tracker.attention(frames[:1], upsample="bilinear")
    assert up.shape == (1, 2, 50, 70)


def test_mass_threshold_is_the_smallest_set_by_brute_force():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 3, 4, generator=gen) ** 3  # skewed, 12 patches per map
    subsets = np.array(list(itertools.product([0, 1], repeat=12)), dtype=bool)  # [4096, 12]
    sizes = subsets.sum(1)
    for mass in (0.3, 0.6, 0.9, 1.0):
        keep = mass_threshold(maps, mass)
        assert keep.shape == maps.shape and keep.dtype == torch.bool
        assert torch.equal(keep, mass_threshold(7.0 * maps, mass))  # scale does not matter
        for amap, kept in zip(maps, keep, strict=True):
            p = amap.flatten().double().numpy()
            p = p / p.sum()
            enough = subsets @ p >= mass - 1e-12
            smallest = sizes[enough].min()
            assert kept.sum() == smallest
            kept_mass = p[kept.flatten().numpy()].sum()
            assert kept_mass >= mass - 1e-12
            assert kept_mass == pytest.approx((subsets[sizes == smallest] @ p).max())


def test_sixty_percent_mask_of_backbone_maps(tracker):
    attn = tracker.attention(random_frames(2, 80, 96, seed=1))
    keep = mass_threshold(attn)  # default 60%
    for amap, kept in zip(attn.flatten(0, 1), keep.flatten(0, 1), strict=True):
        p = np.sort(amap.flatten().double().numpy())[::-1]
        k = int(kept.sum())
        assert p[:k].sum() >= 0.6 > p[: k - 1].sum()  # enough, and one patch fewer is not
        assert amap[kept].min() >= amap[~kept].max()  # the most attended patches


def test_mass_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        mass_threshold(torch.rand(3, 3), 0.0)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        mass_threshold(torch.rand(3, 3), 1.5)
    with pytest.raises(ValueError, match="non-negative"):
        mass_threshold(-torch.rand(3, 3))


def test_upsampling_nearest_is_pil_nearest_and_bilinear_is_smooth():
    ids = np.arange(15).reshape(3, 5)  # odd sides: no output pixel centre on a patch border
    grid = torch.from_numpy(ids).float()
    blocks = upsample_attention(grid, (24, 40))
    assert torch.equal(blocks, grid.repeat_interleave(8, 0).repeat_interleave(8, 1))
    for size in ((25, 31), (7, 9), (40, 12)):
        odd = upsample_attention(grid[None, None], size, "nearest")[0, 0]
        np.testing.assert_array_equal(odd.long().numpy(), resize_mask(ids, *size))
    smooth = upsample_attention(grid, (24, 40), "bilinear")
    assert smooth.min() >= 0 and smooth.max() <= 14
    assert len(torch.unique(smooth)) > 15
    with pytest.raises(ValueError, match="upsampling mode"):
        upsample_attention(grid, (24, 40), "bicubic")


def test_colourize_spans_the_colour_map():
    values = np.linspace(0, 3, 50, dtype=np.float32).reshape(5, 10)
    colours = colourize(values).reshape(-1, 3)
    assert tuple(colours[0]) == (68, 1, 84) and tuple(colours[-1]) == (253, 231, 37)
    assert len(np.unique(colours, axis=0)) == 50


# The video path and the image path.


def test_streamed_video_attention_equals_single_frame_attention(tracker, shared_data):
    frames = list(iter_frames(shared_data("videos", "bear.mp4"), stop=5))
    streamed = [attn for _, attn in tracker.iter_attention(frames)]  # batches of 3, then 2
    for index in (0, 4):
        single = tracker.attention(frames[index][None])[0]
        torch.testing.assert_close(streamed[index], single, atol=1e-5, rtol=1e-4)


def test_attention_command_image_and_video_agree(shared_data, tmp_path, capsys):
    video = shared_data("videos", "bear.mp4")
    index = 3
    frames = list(iter_frames(video, stop=index + 1))
    Image.fromarray(frames[index]).save(tmp_path / "frame.png")
    code, err = run(["attention", tmp_path / "frame.png", "--out", tmp_path / "img", *FAST], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "img").iterdir() if p.name != MARKER_NAME)
    assert names == sorted(
        ["attention.npy", "mean.png", "mean-mask.png"]
        + [f"head-{k:02d}{s}.png" for k in range(2) for s in ("", "-mask")]
    )
    movie = tmp_path / "att.mp4"
    args = ["attention", video, "--out", movie, "--max-frames", index + 1, *FAST]
    code, err = run(args, capsys)
    assert code == 0, err
    decoded = list(iter_frames(movie))
    assert len(decoded) == index + 1
    picture = np.asarray(Image.open(tmp_path / "img" / "mean.png")).astype(np.float32)
    from_video = decoded[index].astype(np.float32)
    assert np.abs(from_video - picture).mean() < 4.0  # same picture, up to H.264
    assert np.abs(frames[index].astype(np.float32) - picture).mean() > 20.0  # it is coloured


def test_attention_command_image_outputs(tmp_path, tracker, capsys):
    frame = random_frames(1, 60, 90, seed=3)[0]
    Image.fromarray(frame).save(tmp_path / "photo.png")
    code, err = run(["attention", tmp_path / "photo.png", "--out", tmp_path / "att", *FAST], capsys)
    assert code == 0, err
    attn = torch.from_numpy(np.load(tmp_path / "att" / "attention.npy"))
    torch.testing.assert_close(attn, tracker.attention(frame[None])[0])
    mean = attn.mean(0)
    mask = read_mask(tmp_path / "att" / "mean-mask.png").ids
    expected = upsample_attention(mass_threshold(mean).float(), (60, 90)) > 0.5
    np.testing.assert_array_equal(mask == 1, expected.numpy())
    assert 0 < (mask == 1).mean() < 1


def test_attention_command_errors(tmp_path, capsys, shared_data):
    code, err = run(["attention", tmp_path / "missing.jpg", "--out", tmp_path / "o", *FAST], capsys)
    assert code == 2 and "does not exist" in err
    video = shared_data("videos", "bear.mp4")
    code, err = run(["attention", video, "--out", tmp_path / "dir", *FAST], capsys)
    assert code == 2 and ".mp4" in err
    code, err = run(["attention", video, "--out", tmp_path / "a.mp4", "--head", 5, *FAST], capsys)
    assert code == 2 and "2 heads" in err
    assert not list(tmp_path.iterdir())


# Start masks.


def test_kmeans_separates_clusters_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(16)[:3] * 5
    truth = torch.arange(60) % 3
    points = centres[truth] + 0.3 * torch.randn(60, 16, generator=gen)
    labels, found = kmeans(points, 3, seed=1)
    assert found.shape == (3, 16)
    pairs = {(int(t), int(label)) for t, label in zip(truth, labels, strict=True)}
    assert len(pairs) == 3  # a one-to-one match between true and found clusters
    assert torch.equal(labels, kmeans(points, 3, seed=1)[0])
    with pytest.raises(ValueError, match="4 clusters of 3 points"):
        kmeans(points[:3], 4)


def blob_scene():
    """Attention on an 8x10 grid (frame 64x80, patch 8): a 3x3 blob, a lone patch, and a
    2x2 blob at the bottom right; features random except on the 2x2 blob."""
    amap = torch.ones(8, 10)
    amap[1:4, 1:4] = 40.0  # big blob
    amap[6, 1] = 60.0  # lone patch, strongest of all
    amap[5:7, 7:9] = 8.0  # weak 2x2 blob
    attn = torch.stack([amap, amap * 1.5])  # two heads, same shape of map
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(32, 8, 10, generator=gen)
    feats[:, 5:7, 7:9] = torch.randn(32, 1, 1, generator=gen) * 4
    return attn, feats


def patch_region(rows, cols, size=(64, 80), grid=(8, 10)):
    ids = np.zeros(grid, np.int64)
    ids[rows, cols] = 1
    return resize_mask(ids, *size) == 1


def test_auto_start_keeps_the_largest_component():
    attn, feats = blob_scene()
    # 85% of the mass: the lone patch and the whole big blob (60 + 9 * 40 of 490 per head).
    mask = auto_start_mask(attn, feats, (64, 80), mass=0.85)
    assert mask.dtype == np.uint8 and mask.shape == (64, 80)
    np.testing.assert_array_equal(mask == 1, patch_region(slice(1, 4), slice(1, 4)))
    assert set(np.unique(mask)) == {0, 1}


def test_auto_start_objects_by_feature_clusters():
    attn, feats = blob_scene()
    attn[:, 1:4, 6:9] = attn[:, 1:4, 1:4]  # a second big blob on the right
    gen = torch.Generator().manual_seed(5)
    feats[:, 1:4, 1:4] = torch.randn(32, 1, 1, generator=gen) * 4  # one object's features
    feats[:, 1:4, 6:9] = torch.randn(32, 1, 1, generator=gen) * 4  # the other's
    attn[:, 1:4, 1:4] *= 1.2  # the left blob holds more attention: id 1
    mask = auto_start_mask(attn, feats, (64, 80), mass=0.9, objects=2)
    np.testing.assert_array_equal(mask == 1, patch_region(slice(1, 4), slice(1, 4)))
    np.testing.assert_array_equal(mask == 2, patch_region(slice(1, 4), slice(6, 9)))
    with pytest.raises(ValueError, match="too few for 200 objects"):
        auto_start_mask(attn, feats, (64, 80), objects=200)


def test_auto_start_box_restricts_to_the_foreground_inside_it():
    attn, feats = blob_scene()
    box = (48, 32, 80, 64)  # x0, y0, x1, y1: patches rows 4..7, cols 6..9
    assert box_patches(box, (64, 80), (8, 10)).sum() == 16
    mask = auto_start_mask(attn, feats, (64, 80), box=box)
    # Inside the box the weak blob holds the attention and its own features: it is the object.
    np.testing.assert_array_equal(mask == 1, patch_region(slice(5, 7), slice(7, 9)))
    small = auto_start_mask(attn, feats, (64, 80), box=(50, 42, 53, 46))  # inside one patch
    assert small.any() and not small[:42].any() and not small[:, :50].any()
    assert not small[46:].any() and not small[:, 53:].any()
    with pytest.raises(ValueError, match="does not fit the 80x64 frame"):
        auto_start_mask(attn, feats, (64, 80), box=(0, 0, 81, 10))


def test_parse_box():
    assert parse_box("10, 20,30,40") == (10, 20, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "1.5,2,3,4"):
        with pytest.raises(ValueError, match="four integers"):
            parse_box(bad)
    with pytest.raises(ValueError, match="x0 < x1"):
        parse_box("30,0,10,5")


def test_track_with_auto_start_uses_one_forward_pass(tracker, monkeypatch):
    frames = list(random_frames(5, 48, 64, seed=4))
    calls = []
    forward = tracker.extractor.forward

    def counting(images, attention=False):
        calls.append((len(images), attention))
        return forward(images, attention)

    monkeypatch.setattr(tracker.extractor, "forward", counting)
    results = list(tracker.track(frames, AutoStart(), with_frames=True))
    assert calls == [(3, True), (2, False)]  # the same batches as with a given mask
    monkeypatch.undo()
    feats, attn = tracker.extractor.forward(
        tracker.extractor.preprocess(frames[0][None], tracker.input_size(48, 64)), True
    )
    expected = auto_start_mask(attn[0], feats[0], (48, 64))
    np.testing.assert_array_equal(results[0][1], expected)
    assert [index for index, *_ in results] == list(range(5))


# `segment --auto`.


@pytest.fixture(scope="module")
def clip(shared_data):
    return shared_data("videos-wild", "02_cups.mp4")


def test_segment_auto_writes_its_start_mask(clip, tmp_path, tracker, capsys):
    out = tmp_path / "res"
    code, err = run(["segment", clip, "--auto", "--out", out, "--max-frames", 4, *FAST], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir() if p.name != MARKER_NAME)
    assert names == [f"{i:05d}.png" for i in range(4)] + [START_MASK_NAME]
    start = read_mask(out / START_MASK_NAME).ids
    np.testing.assert_array_equal(start, read_mask(out / "00000.png").ids)
    frame = next(iter_frames(clip))
    feats, attn = tracker.extractor.forward(
        tracker.extractor.preprocess(frame[None], tracker.input_size(*frame.shape[:2])), True
    )
    np.testing.assert_array_equal(start, auto_start_mask(attn[0], feats[0], frame.shape[:2]))
    assert "1 object(s) [1]" in err


def test_segment_auto_box_restricts_the_start(clip, tmp_path, capsys):
    out = tmp_path / "res"
    box = "400,200,800,500"
    args = ["segment", clip, "--auto", "--box", box, "--objects", 2, "--out", out]
    code, err = run([*args, "--max-frames", 2, *FAST], capsys)
    assert code == 0, err
    start = read_mask(out / START_MASK_NAME).ids
    inside = np.zeros(start.shape, bool)
    inside[200:500, 400:800] = True
    assert set(np.unique(start[inside])) == {0, 1, 2} and not start[~inside].any()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--auto", "--box", "1,2,3"], "four integers"),
        (["--auto", "--box", "0,0,2000,50"], "does not fit the 1280x720 frame"),
        (["--auto", "--mass", "1.5"], "mass must be in"),
        (["--mask", "m.png", "--objects", "2"], "--objects can only be used with --auto"),
    ],
)
def test_segment_auto_errors(clip, tmp_path, capsys, extra, message):
    code, err = run(["segment", clip, *extra, "--out", tmp_path / "res", *FAST], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_segment_needs_exactly_one_of_mask_and_auto(clip, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(clip), "--auto", "--mask", "m.png", "--out", str(tmp_path / "res")])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
    # Neither (--mask is optional on the parser, for --batch): one line, status 2.
    code, err = run(["segment", clip, "--out", tmp_path / "res"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--mask FILE, or --auto" in err
    assert not list(tmp_path.iterdir())
