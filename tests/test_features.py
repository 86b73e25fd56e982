"""Feature extraction: input sizes, the official DINO forward, the feature contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinotrack.errors import UnavailableError
from dinotrack.models.build import load_backbone
from dinotrack.models.features import FeatureExtractor, network_input_size, resample_pos_embed_dino


@pytest.mark.parametrize(
    "size,patch,rule,expected",
    [
        ((480, 854), 8, "official", (480, 832)),  # DAVIS 480p: long side floored to 64
        ((854, 480), 8, "official", (832, 480)),  # portrait
        ((480, 854), 8, "aspect", (480, 856)),  # 854 rounded to a multiple of 8
        ((480, 854), 16, "aspect", (480, 848)),
        ((720, 1280), 8, "aspect", (480, 856)),  # 853.3 -> 856
        ((1080, 1920), 14, "aspect", (476, 854)),
        ((500, 500), 8, "official", (480, 448)),  # square: width is the "long" side, floored
    ],
)
def test_network_input_size(size, patch, rule, expected):
    assert network_input_size(*size, 480, patch, rule) == expected


def test_unknown_resize_rule():
    with pytest.raises(ValueError, match="unknown resize rule"):
        network_input_size(480, 854, 480, 8, "stretch")


def dino_reference_features(net, img):
    """The official DINO ViT forward, written from its definition: class token + patches,
    position embeddings resampled with scale factor (grid + 0.1) / sqrt(N), unfused attention,
    last block's tokens after the final norm, class token dropped."""
    batch, _, height, width = img.shape
    patch = net.patch_embed.proj.kernel_size[0]
    x = net.patch_embed.proj(img).flatten(2).transpose(1, 2)
    x = torch.cat([net.cls_token.expand(batch, -1, -1), x], dim=1)
    n = net.pos_embed.shape[1] - 1
    side = math.sqrt(n)
    gh, gw = height // patch + 0.1, width // patch + 0.1
    grid = net.pos_embed[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(gh / side, gw / side), mode="bicubic")
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, x.shape[-1])
    pos = torch.cat([net.pos_embed[:, :1], grid], dim=1)
    if x.shape[1] - 1 == n and height == width:  # the official code keeps the native grid
        pos = net.pos_embed
    x = x + pos
    for blk in net.blocks:
        a = blk.attn
        y = blk.norm1(x)
        qkv = a.qkv(y).reshape(batch, y.shape[1], 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(batch, y.shape[1], -1)
        x = x + a.proj(y)
        x = x + blk.mlp(blk.norm2(x))
    return net.norm(x)[:, 1:], attn[:, :, 0, 1:]


@pytest.mark.parametrize("name", ["test_vit_tiny", "test_vit_tiny16"])
@pytest.mark.parametrize("size", [(64, 96), (48, 160), (224, 224)])
def test_features_match_the_official_dino_forward(name, size):
    net, spec = load_backbone(name)
    with torch.no_grad():
        net.pos_embed.normal_(0, 1)  # make position embeddings matter
    fx = FeatureExtractor(net, spec, "cpu", precision="fp32", pos_embed="dino")
    img = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    feats, attn = fx.forward(img, attention=True)
    with torch.no_grad():
        ref, ref_attn = dino_reference_features(net, img)
    gh, gw = size[0] // spec.patch_size, size[1] // spec.patch_size
    assert feats.shape == (2, net.embed_dim, gh, gw) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.flatten(2).transpose(1, 2), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(attn.flatten(2), ref_attn, atol=1e-5, rtol=1e-4)
    plain, none = fx.forward(img)
    assert none is None
    torch.testing.assert_close(plain, feats, atol=1e-5, rtol=1e-5)


def test_timm_rule_is_timm_forward_features():
    net, spec = load_backbone("test_vit_tiny")
    fx = FeatureExtractor(net, spec, "cpu", pos_embed="timm")
    img = torch.randn(1, 3, 40, 72)
    with torch.no_grad():
        ref = net.forward_features(img)[:, 1:].reshape(1, 5, 9, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(fx.forward(img)[0], ref)


def test_pos_embed_identity_on_native_grid():
    pos = torch.randn(1, 1 + 28 * 28, 16)
    assert resample_pos_embed_dino(pos, (28, 28)) is pos
    assert resample_pos_embed_dino(pos, (60, 104)).shape == (1, 1 + 60 * 104, 16)


def test_preprocess_normalises_and_resizes():
    net, spec = load_backbone("test_vit_tiny")
    fx = FeatureExtractor(net, spec, "cpu")
    frame = np.zeros((30, 50, 3), dtype=np.uint8)
    frame[..., 0] = 255
    x = fx.preprocess(frame[None], (32, 56))
    assert x.shape == (1, 3, 32, 56)
    expected_red = (1 - spec.mean[0]) / spec.std[0]
    torch.testing.assert_close(x[0, 0], torch.full((32, 56), expected_red))
    with pytest.raises(ValueError, match="RGB frames"):
        fx.preprocess(np.zeros((1, 30, 50)), (32, 56))


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    net, spec = load_backbone("test_vit_tiny")
    with pytest.raises(UnavailableError, match="asks for CUDA, which is not available"):
        FeatureExtractor(net, spec, "cuda")
