"""Downloading official weights into their caches, and where they are found.

DINO's official files go into torch's hub cache (``torch.hub.get_dir()/checkpoints``);
DINOv2 and DINOv3 weights come through timm's pretrained tags into the Hugging Face hub cache.
Offline, one error names the URL or repository, the cache path where the file can be placed by
hand, and the shipped model that needs no network. Nothing here falls back to random weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import urllib.error
import urllib.parse
from pathlib import Path

import torch

from dinotrack.errors import InputError, ModelUnavailableError
from dinotrack.io.atomic import atomic_output
from dinotrack.models.registry import OFFLINE_MODEL, BackboneSpec


def hub_weights_path(spec: BackboneSpec) -> Path:
    """Where the weights of ``spec`` live once downloaded, and where a file placed by hand is
    found: torch's hub cache for an official URL, the Hugging Face hub cache (revision
    ``main``) for a timm pretrained tag."""
    if spec.hf_hub_id is not None:
        from huggingface_hub import constants

        folder = "models--" + spec.hf_hub_id.replace("/", "--")
        return Path(constants.HF_HUB_CACHE) / folder / "snapshots" / "main" / spec.hf_filename
    if spec.weights_filename is None:
        raise InputError(f"backbone {spec.name!r} has no download URL")
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.weights_filename


def download_weights(spec: BackboneSpec, progress: bool = True) -> Path:
    """Return the local path of the official weights of ``spec``, downloading them if needed.

    Raises:
        RuntimeError: When the download fails (offline, blocked, bad URL); the message names
            the URL or hub repository, the cache path where the file can be placed by hand, and
            ``--weights``.
    """
    if spec.hf_hub_id is not None:
        return _download_from_hf_hub(spec)
    path = hub_weights_path(spec)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(path) as tmp:
            torch.hub.download_url_to_file(spec.url, str(tmp), progress=progress)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"could not download the weights of {spec.name!r} from {spec.url} ({exc}). "
            f"Download that file by hand and place it at {path}, pass a local file as "
            f"weights=PATH, or use the model shipped with dinotrack that needs no network: "
            f"model={OFFLINE_MODEL}.",
            parameter="weights",
        ) from exc
    return path


def _check_hub_reachable(endpoint: str) -> None:
    """Fail at once, instead of after the hub client's retries, when the hub's host name does
    not resolve and no proxy is set (a machine without a network)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    host = urllib.parse.urlsplit(endpoint).hostname
    if host is None:
        return
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise OSError(f"cannot resolve {host}: no network?") from exc


def _download_from_hf_hub(spec: BackboneSpec) -> Path:
    """The weights file of a timm pretrained tag, from (or into) the Hugging Face hub cache."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    by_hand = hub_weights_path(spec)
    repo, name = spec.hf_hub_id, spec.hf_filename
    cached = try_to_load_from_cache(repo, name, cache_dir=constants.HF_HUB_CACHE)
    if isinstance(cached, str):
        return Path(cached)
    try:
        _check_hub_reachable(constants.ENDPOINT)
        # The hub client logs a line per retry (five, over ~20 s, when offline): the error
        # below says it once.
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        hub_log.setLevel(logging.ERROR)
        try:
            return Path(hf_hub_download(repo, name, cache_dir=constants.HF_HUB_CACHE))
        finally:
            hub_log.setLevel(level)
    except Exception as exc:  # the hub client raises many types (offline, HTTP, DNS, timeouts)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelUnavailableError(
            f"could not download the weights of {spec.name!r} ({name} of the Hugging Face hub "
            f"repository {repo}: {reason}). Download https://huggingface.co/{repo}/resolve/"
            f"main/{name} by hand and place it at {by_hand}, pass a local file (also an "
            "official release .pth) as weights=PATH, or use the model shipped with dinotrack "
            f"that needs no network: model={OFFLINE_MODEL}.",
            parameter="weights",
        ) from exc


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, for recording which weights produced a result."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
