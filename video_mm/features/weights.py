"""Torchvision weights fetched the torchvision way: cache first, else download, hash-checked.

A weights name resolves to ``<torch hub dir>/checkpoints/<file name of its URL>`` (``$TORCH_HOME``
or ``features.torch_home``), as ``torchvision.models.get_weight(...).get_state_dict()`` does. When
the file is missing it is downloaded from the weights' URL, or from ``features.weights_mirror``
(a base URL holding the same file names) for sites that host the files themselves:

- streamed to a temporary file beside the target with a progress bar, then renamed into place, so
  a reader never sees half a file and a failed download leaves nothing behind;
- checked with torch.hub's ``check_hash`` rule: the file name ends ``-<hex prefix of its
  sha256>.<ext>`` and the bytes must hash to that prefix (truncated or corrupted files fail);
- never attempted when offline (``features.offline``, or ``HF_HUB_OFFLINE=1`` /
  ``TORCH_HUB_OFFLINE=1`` in the environment): the error names the file and the folder to put it in.

Each way a download can fail is one typed, one-line error: server down or timed out, an HTTP error
such as 404, a hash mismatch, a full disk.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch.hub import HASH_REGEX
from tqdm import tqdm

from video_mm.errors import WeightsCorrupt, WeightsDownloadFailed, WeightsNotFound

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
CHUNK = 1 << 20


def offline_from_env() -> bool:
    """Whether the environment asks for no network the way the ecosystem spells it: the one
    place outside settings that reads the environment, since these variables are not ours."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in OFFLINE_ENV)


def checkpoints_dir(torch_home: str | Path | None = None) -> Path:
    """Where torchvision keeps downloaded weights: ``<torch_home or torch hub dir>/checkpoints``."""
    hub = Path(torch_home) / "hub" if torch_home else Path(torch.hub.get_dir())
    return hub / "checkpoints"


def hash_prefix(filename: str) -> str | None:
    """The sha256 prefix torch.hub reads from a file name (``resnet18-f37072fd.pth``)."""
    match = HASH_REGEX.search(filename)
    return match.group(1) if match and match.group(1) else None


def file_matches_name(path: Path, name: str | None = None) -> bool:
    """torch.hub's check_hash rule: the sha256 starts with the prefix in the file's name (or in
    ``name``, for a temporary file not yet renamed), when the name has one."""
    prefix = hash_prefix(name or path.name)
    if prefix is None:
        return True
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest().startswith(prefix)


def source_url(url: str, mirror: str = "") -> str:
    """The URL to fetch: the weights' own, or the same file name under the mirror base URL."""
    return f"{mirror.rstrip('/')}/{Path(urlsplit(url).path).name}" if mirror else url


def resolve_weights_file(
    url: str,
    *,
    torch_home: str | Path | None = None,
    mirror: str = "",
    offline: bool = False,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """The cached file of the weights at ``url``, downloading it first when missing (see the
    module docstring). A cached file is hash-checked too: a corrupt cache entry is an error,
    not silently used."""
    filename = Path(urlsplit(url).path).name
    path = checkpoints_dir(torch_home) / filename
    if path.is_file():
        if not file_matches_name(path):
            raise WeightsCorrupt(
                f"weights file {path} is corrupt: its sha256 does not start with "
                f"{hash_prefix(filename)}; delete it to download it again"
            )
        return path
    if offline or offline_from_env():
        raise WeightsNotFound(
            path,
            f"Offline (features.offline or HF_HUB_OFFLINE=1), so nothing is downloaded: put "
            f"{filename} (from {source_url(url, mirror)}) into {path.parent}/ , or point "
            f"TORCH_HOME / features.torch_home at a folder whose hub/checkpoints/ has it.",
        )
    return download(source_url(url, mirror), path, timeout_s=timeout_s, progress=progress)


def download(url: str, dest: Path, *, timeout_s: float = 60.0, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` atomically, checking the hash prefix in ``dest``'s name."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, dest) from exc
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        _stream(url, tmp, timeout_s=timeout_s, progress=progress)
        if not file_matches_name(tmp, dest.name):
            raise WeightsCorrupt(
                f"downloaded {url} is corrupt: its sha256 does not start with "
                f"{hash_prefix(dest.name)} (the file was removed)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream(url: str, tmp: Path, *, timeout_s: float, progress: bool) -> None:
    """GET ``url`` into ``tmp`` with a progress bar; every failure becomes a typed error."""
    request = urllib.request.Request(url, headers={"User-Agent": "video-mm"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        raise WeightsDownloadFailed(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}",
            transient=exc.code >= 500 or exc.code == 429,
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsDownloadFailed(
            f"cannot download {url}: server unreachable ({reason})", transient=True
        ) from exc
    with response:
        total = int(response.headers.get("Content-Length") or 0) or None
        received = 0
        try:
            with open(tmp, "wb") as f, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=tmp.name.split(".", 1)[0], disable=not progress, leave=False,
            ) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (TimeoutError, http.client.IncompleteRead, ConnectionError) as exc:
            raise WeightsCorrupt(
                f"download of {url} was cut off after {received} bytes ({exc}); nothing was kept"
            ) from exc
        except OSError as exc:
            raise _disk_error(exc, tmp) from exc
    if total is not None and received != total:
        raise WeightsCorrupt(
            f"download of {url} is truncated: {received} of {total} bytes; nothing was kept"
        )


def _disk_error(exc: OSError, path: Path) -> WeightsDownloadFailed:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return WeightsDownloadFailed(
            f"no space left to write weights into {path.parent} ({os.strerror(exc.errno)}); "
            "nothing was kept: free space or point TORCH_HOME / features.torch_home elsewhere"
        )
    return WeightsDownloadFailed(f"cannot write weights into {path.parent}: {exc}")
