"""Hugging Face references resolved the Hugging Face way: a local folder, or a hub repo id read
through the hub cache (``$HF_HOME/hub/models--org--name/snapshots/<commit>/``).

A repo id is downloaded into the cache when online and read from it when offline
(``HF_HUB_OFFLINE=1`` or ``features.offline``), exactly as ``transformers`` does, so a cache filled
on another machine (``hf download org/name``, or copied) works here without a network. What a
folder holds is identified by :func:`source_id`: the commit of a cached snapshot, else the hashes of
its files, so two different models never share cached features.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from video_mm.errors import ConfigError, ModelError, WeightsDownloadFailed, WeightsNotFound
from video_mm.features.cache import file_sha256
from video_mm.features.weights import offline_from_env

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".msgpack", ".h5")
SNAPSHOT = re.compile(r"models--(?P<repo>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})")


@dataclass(frozen=True)
class HubSource:
    """Where a reference resolved: the folder to read, and what identifies its contents."""

    ref: str  # as given: a folder or a repo id
    folder: Path
    repo_id: str = ""  # empty for a local folder
    revision: str = ""  # the snapshot's commit, for a repo id

    @property
    def id(self) -> str:
        return source_id(self.folder)


def is_repo_id(ref: str) -> bool:
    return bool(REPO_ID.match(ref)) and not Path(ref).expanduser().exists()


def resolve(
    ref: str, *, revision: str | None = None, offline: bool = False,
    allow_patterns: list[str] | None = None, what: str = "model",
) -> HubSource:
    """A local folder as is; a repo id through the hub cache (downloaded when online)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return HubSource(ref, path.resolve())
    if path.exists() or not is_repo_id(ref):
        raise ConfigError(f"{what} {ref!r} is neither a folder nor a Hugging Face repo id "
                          "(org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = offline or offline_from_env()
    try:
        folder = Path(snapshot_download(
            ref, revision=revision or None, local_files_only=offline,
            allow_patterns=allow_patterns,
        ))
    except LocalEntryNotFoundError as exc:
        raise WeightsNotFound(
            f"hf://{ref}",
            ("Offline (HF_HUB_OFFLINE=1 or features.offline) and not in the Hugging Face cache "
             if offline else "Not in the Hugging Face cache and the hub could not be reached ")
            + f"({_cache_dir()}). On a machine with network run `hf download {ref}` (or "
            f"`vmm models pull {ref}`) and copy its HF_HOME, or give a local folder.",
        ) from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ConfigError(f"{what} {ref!r}: no such Hugging Face repo, or it needs a login "
                          f"({type(exc).__name__})") from exc
    except RevisionNotFoundError as exc:
        raise ConfigError(f"{what} {ref!r}: revision {revision!r} not found") from exc
    except OSError as exc:  # requests/httpx connection errors are OSErrors
        raise WeightsDownloadFailed(f"cannot download {ref} from the Hugging Face hub: {exc}",
                                    transient=True) from exc
    match = SNAPSHOT.search(folder.as_posix())
    return HubSource(ref, folder, ref, match.group("rev") if match else "")


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def source_id(folder: Path) -> str:
    """``hf:<repo>@<commit>`` for a hub snapshot, else ``sha256:`` over the weight files' names
    and hashes (config files included, so a changed architecture is a different id)."""
    match = SNAPSHOT.search(folder.resolve().as_posix()) or SNAPSHOT.search(folder.as_posix())
    if match:
        repo = match.group("repo").replace("--", "/")
        return f"hf:{repo}@{match.group('rev')}"
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
    if not files:
        raise WeightsNotFound(folder, "The folder holds no config.json or weight files.")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}:{file_sha256(p)}\n".encode())
    return f"sha256:{h.hexdigest()}"


def quiet_transformers() -> None:
    """No per-load progress bars or load reports from transformers: ours say what happens."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def read_hf_config(folder: Path) -> Any:
    """The transformers config (``config.json``) of a resolved folder, read quietly and never
    from the network; an unreadable one is a :class:`ModelError` naming the folder."""
    from transformers import AutoConfig

    quiet_transformers()
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: no readable transformers config.json ({exc})") from exc


def local_folder(ref: str | Path, *, offline: bool = False, what: str = "model") -> Path:
    """``ref`` itself when it exists on disk, else the hub-cache folder of the repo id ``ref``
    (what ``from_pretrained`` of a captioner or retrieval model accepts)."""
    path = Path(ref).expanduser()
    if path.exists() or not is_repo_id(str(ref)):
        return path
    return resolve(str(ref), offline=offline, what=what).folder
