"""Tests for dinotrack.io.masks: palette, reading every mask format, writing, overlays, resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from dinotrack.io.masks import (
    MAX_GRAY_IDS,
    LoadedMask,
    davis_palette,
    mask_to_image,
    read_mask,
    resize_mask,
    write_mask,
)
from dinotrack.results.overlay import blend_overlay


def test_davis_palette_entries():
    palette = davis_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    expected = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        7: (128, 128, 128),
        8: (64, 0, 0),
        9: (192, 0, 0),
        255: (224, 224, 192),
    }
    for index, colour in expected.items():
        assert tuple(palette[index]) == colour, index
    assert len({tuple(colour) for colour in palette}) == 256


def test_palette_png_round_trip_keeps_ids_and_palette(tmp_path):
    ids = np.zeros((20, 30), dtype=np.int64)
    ids[2:8, 3:9] = 3
    ids[10:18, 12:25] = 7
    palette = np.random.default_rng(0).integers(0, 256, (8, 3)).astype(np.uint8)
    write_mask(tmp_path / "m.png", ids, palette)

    loaded = read_mask(tmp_path / "m.png")
    assert loaded.format == "palette"
    assert loaded.ids.dtype == np.int64
    np.testing.assert_array_equal(loaded.ids, ids)
    np.testing.assert_array_equal(loaded.palette[:8], palette)
    assert Image.open(tmp_path / "m.png").mode == "P"


def test_write_mask_defaults_to_davis_palette(tmp_path):
    ids = np.array([[0, 1], [2, 254]])
    write_mask(tmp_path / "m.png", ids)
    loaded = read_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(loaded.ids, ids)
    np.testing.assert_array_equal(loaded.palette, davis_palette())


def test_palette_index_255_is_void_not_an_object(tmp_path):
    ids = np.array([[0, 1, 255], [2, 255, 255]])  # 255: DAVIS/VOC void borders
    write_mask(tmp_path / "m.png", ids)
    with pytest.warns(UserWarning, match="3 pixels of palette index 255 .*void"):
        loaded = read_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(loaded.ids, [[0, 1, 0], [2, 0, 0]])


def test_gray_binary_becomes_id_one(tmp_path):
    values = np.zeros((10, 12), dtype=np.uint8)
    values[3:6, 4:9] = 255
    Image.fromarray(values).save(tmp_path / "g.png")
    loaded = read_mask(tmp_path / "g.png")
    assert loaded.format == "gray-binary" and loaded.palette is None
    np.testing.assert_array_equal(loaded.ids, (values == 255).astype(np.int64))


def test_gray_small_ints_are_ids(tmp_path):
    values = np.array([[0, 1, 2], [5, 5, 0]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "g.png")
    loaded = read_mask(tmp_path / "g.png")
    assert loaded.format == "gray"
    np.testing.assert_array_equal(loaded.ids, values)


def test_gray_ids_below_the_maximum_are_kept(tmp_path):
    values = np.array([[0, 1, 254], [7, 7, 0]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "g.png")
    loaded = read_mask(tmp_path / "g.png")
    assert loaded.format == "gray"
    np.testing.assert_array_equal(loaded.ids, values)


def binary_disc(height=40, width=60):
    y, x = np.mgrid[:height, :width]
    return ((y - 20) ** 2 + (x - 30) ** 2 < 12**2).astype(np.uint8) * 255


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.asarray(Image.fromarray(binary_disc()).filter(ImageFilter.GaussianBlur(2))),
        lambda: np.asarray(Image.fromarray(binary_disc()).resize((30, 20), Image.BILINEAR)),
        lambda: np.array([[0, 1, 255]], dtype=np.uint8),  # 0, 255 and one level between
    ],
    ids=["blurred", "downscaled-bilinear", "one-level-between"],
)
def test_anti_aliased_gray_mask_is_refused(tmp_path, make):
    values = make()
    assert {0, 255} <= set(np.unique(values)) and len(np.unique(values)) > 2
    Image.fromarray(values).save(tmp_path / "aa.png")
    with pytest.raises(ValueError, match="anti-aliased binary mask") as error:
        read_mask(tmp_path / "aa.png")
    message = str(error.value)
    assert "Threshold it to 0/255, or save the objects as a palette PNG" in message
    assert "\n" not in message
    # Thresholded, it is a binary mask again.
    Image.fromarray(np.where(values >= 128, 255, 0).astype(np.uint8)).save(tmp_path / "t.png")
    assert read_mask(tmp_path / "t.png").format == "gray-binary"


def test_anti_aliased_16_bit_gray_mask_is_refused(tmp_path):
    blurred = Image.fromarray(binary_disc()).filter(ImageFilter.GaussianBlur(2))
    values = (np.asarray(blurred).astype(np.uint16) * 257).astype(np.uint16)  # 0..65535
    Image.fromarray(values).save(tmp_path / "aa16.png")
    with pytest.raises(ValueError, match="0 and 65535 and .* in between.*0/65535"):
        read_mask(tmp_path / "aa16.png")


def test_gray_photo_is_refused_but_many_small_ids_are_kept(tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(10, 240, (32, 32)).astype(np.uint8)  # neither 0 nor 255
    Image.fromarray(photo).save(tmp_path / "photo.png")
    with pytest.raises(ValueError, match="Is it a photo") as error:
        read_mask(tmp_path / "photo.png")
    assert f"at most {MAX_GRAY_IDS} object ids" in str(error.value)
    assert "palette PNG" in str(error.value)

    ids = np.arange(MAX_GRAY_IDS + 1, dtype=np.uint8).reshape(5, 13)  # 0 and 64 ids
    Image.fromarray(ids).save(tmp_path / "ids.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "ids.png").ids, ids)
    Image.fromarray(ids + 1).save(tmp_path / "too_many.png")  # 65 non-zero values
    with pytest.raises(ValueError, match="65 gray levels besides black"):
        read_mask(tmp_path / "too_many.png")


def test_one_bit_and_16_bit_gray(tmp_path):
    bits = np.zeros((6, 9), dtype=bool)
    bits[1:4, 2:7] = True
    Image.fromarray(bits).save(tmp_path / "b.png")
    loaded = read_mask(tmp_path / "b.png")
    assert loaded.format == "gray-binary"
    np.testing.assert_array_equal(loaded.ids, bits.astype(np.int64))

    Image.fromarray((bits * 65535).astype(np.uint16)).save(tmp_path / "w.png")
    assert Image.open(tmp_path / "w.png").mode.startswith("I")
    np.testing.assert_array_equal(read_mask(tmp_path / "w.png").ids, bits.astype(np.int64))

    small = np.array([[0, 2, 4]], dtype=np.uint16)
    Image.fromarray(small).save(tmp_path / "s.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "s.png").ids, small)

    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="0..254"):
        read_mask(tmp_path / "big.png")


def test_rgb_with_davis_colours_keeps_palette_indices(tmp_path):
    ids = np.zeros((12, 16), dtype=np.int64)
    ids[1:5, 1:5] = 5
    ids[6:11, 8:15] = 2
    rgb = davis_palette()[ids]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    loaded = read_mask(tmp_path / "rgb.png")
    assert loaded.format == "rgb" and loaded.palette is None
    np.testing.assert_array_equal(loaded.ids, ids)


def test_rgb_arbitrary_colours_numbered_by_first_appearance(tmp_path):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[0, 5] = (10, 200, 30)  # first in raster order -> 1
    rgb[1, 0] = (255, 255, 255)  # second -> 2
    rgb[2:4, 1:3] = (17, 34, 51)  # third -> 3
    rgb[3, 5] = (10, 200, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    expected = np.zeros((4, 6), dtype=np.int64)
    expected[0, 5] = expected[3, 5] = 1
    expected[1, 0] = 2
    expected[2:4, 1:3] = 3
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png").ids, expected)


def test_rgba_transparent_pixels_are_background(tmp_path):
    rgba = np.zeros((5, 5, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # transparent white background
    rgba[1:3, 1:3] = (0, 128, 0, 255)  # DAVIS colour 2, opaque
    rgba[4, 4] = (0, 128, 0, 10)  # nearly transparent still counts
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    loaded = read_mask(tmp_path / "rgba.png")
    expected = np.zeros((5, 5), dtype=np.int64)
    expected[1:3, 1:3] = 2
    expected[4, 4] = 2
    assert loaded.format == "rgb"
    np.testing.assert_array_equal(loaded.ids, expected)


def test_too_many_colours_is_rejected(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    with pytest.raises(ValueError, match="photo"):
        read_mask(tmp_path / "photo.png")


def test_read_mask_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_mask(tmp_path / "nope.png")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="garbage.png"):
        read_mask(tmp_path / "garbage.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(ValueError, match="PNG"):
        read_mask(tmp_path / "m.jpg")
    Image.new("CMYK", (4, 4)).save(tmp_path / "cmyk.tif")
    with pytest.raises(ValueError, match="mode"):
        read_mask(tmp_path / "cmyk.tif")


def test_mask_to_image_checks_ids():
    image = mask_to_image(np.array([[0, 3], [7, 255]], dtype=np.int32))
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), [[0, 3], [7, 255]])
    with pytest.raises(ValueError, match="0..255"):
        mask_to_image(np.array([[0, 256]]))
    with pytest.raises(ValueError, match="0..255"):
        mask_to_image(np.array([[-1, 0]]))
    with pytest.raises(TypeError, match="integer"):
        mask_to_image(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        mask_to_image(np.zeros((2, 2, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="palette"):
        mask_to_image(np.zeros((2, 2), dtype=np.int64), np.zeros((4, 4), dtype=np.uint8))


def test_write_mask_is_atomic(tmp_path):
    target = tmp_path / "00000.png"
    write_mask(target, np.ones((4, 4), dtype=np.int64))
    write_mask(target, np.full((4, 4), 2))  # replaces the existing file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.png"]
    np.testing.assert_array_equal(read_mask(target).ids, np.full((4, 4), 2))

    with pytest.raises(ValueError):
        write_mask(target, np.full((4, 4), 300))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.png"]
    np.testing.assert_array_equal(read_mask(target).ids, np.full((4, 4), 2))

    with pytest.raises(FileNotFoundError, match="missing"):
        write_mask(tmp_path / "missing" / "m.png", np.zeros((2, 2), dtype=np.int64))


def test_write_mask_failure_during_save_leaves_no_temp_file(tmp_path):
    target = tmp_path / "m.png"
    # A path that exists as a directory cannot be replaced by a file: the rename fails.
    target.mkdir()
    with pytest.raises(OSError):
        write_mask(target, np.zeros((3, 3), dtype=np.int64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]


def test_blend_overlay_formula_and_boundary():
    frame = np.full((6, 8, 3), 100, dtype=np.uint8)
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[1:5, 1:6] = 1
    palette = davis_palette()[:4]
    out = blend_overlay(frame, ids, palette, alpha=0.25)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out[ids == 0], frame[ids == 0])
    np.testing.assert_array_equal(out[2:4, 2:5], np.full((2, 3, 3), [107, 75, 75]))
    ring = (ids == 1).copy()
    ring[2:4, 2:5] = False
    np.testing.assert_array_equal(out[ring], np.tile(palette[1], (ring.sum(), 1)))

    plain = blend_overlay(frame, ids, palette, alpha=0.25, boundary=False)
    np.testing.assert_array_equal(plain[ids == 1], np.tile([107, 75, 75], ((ids == 1).sum(), 1)))
    np.testing.assert_array_equal(frame, 100)  # input untouched


def test_blend_overlay_checks_inputs():
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="palette"):
        blend_overlay(frame, np.full((4, 4), 5), davis_palette()[:3])
    with pytest.raises(ValueError, match="match"):
        blend_overlay(frame, np.zeros((4, 5), dtype=np.int64), davis_palette())
    with pytest.raises(ValueError, match="alpha"):
        blend_overlay(frame, np.zeros((4, 4), dtype=np.int64), davis_palette(), alpha=1.5)
    with pytest.raises(TypeError, match="uint8"):
        blend_overlay(frame.astype(np.float32), np.zeros((4, 4), dtype=np.int64), davis_palette())


def test_resize_mask_equals_pil_nearest():
    rng = np.random.default_rng(0)
    sizes = [(480, 854, 30, 53), (30, 53, 480, 854), (51, 38, 66, 35), (7, 5, 7, 5)]
    sizes += [tuple(int(v) for v in rng.integers(1, 90, 4)) for _ in range(300)]
    for height_in, width_in, height, width in sizes:
        ids = rng.integers(0, 256, (height_in, width_in)).astype(np.uint8)
        expected = np.asarray(Image.fromarray(ids).resize((width, height), Image.NEAREST))
        out = resize_mask(ids, height, width)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, expected, err_msg=str((height_in, width_in)))


def test_resize_mask_keeps_large_ids_and_checks_size():
    ids = np.array([[1000, 2], [3, 70000]], dtype=np.int64)
    np.testing.assert_array_equal(resize_mask(ids, 2, 2), ids)
    np.testing.assert_array_equal(resize_mask(ids, 4, 4), np.kron(ids, np.ones((2, 2), int)))
    with pytest.raises(ValueError, match="positive"):
        resize_mask(ids, 0, 3)


def test_real_davis2016_annotation_is_binary(shared_data):
    path = shared_data("davis2016-dev", "Annotations", "480p", "dog-agility", "00000.png")
    loaded = read_mask(path)
    assert isinstance(loaded, LoadedMask)
    assert loaded.format == "gray-binary"
    assert loaded.ids.shape == (480, 854)
    assert set(np.unique(loaded.ids)) == {0, 1}


def test_real_davis2017_palette_annotation_keeps_ids(shared_data):
    path = shared_data("davis-metric-oracle", "Annotations", "480p", "lab-coat", "00000.png")
    loaded = read_mask(path)
    assert loaded.format == "palette"
    assert set(np.unique(loaded.ids)) == {0, 3, 4, 5}
    np.testing.assert_array_equal(loaded.palette[:6], davis_palette()[:6])


def test_real_davis2016_annotation_blurred_is_refused(shared_data, tmp_path):
    path = shared_data("davis2016-dev", "Annotations", "480p", "boat", "00000.png")
    with Image.open(path) as image:
        blurred = image.convert("L").filter(ImageFilter.GaussianBlur(1.5))
    blurred.save(tmp_path / "blurred.png")
    with pytest.raises(ValueError, match="anti-aliased"):
        read_mask(tmp_path / "blurred.png")
