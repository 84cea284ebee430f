"""One typed settings object for every stage and surface.

Defaults come from ``configs/default.toml`` (or the file named by ``VMM_CONFIG``); any key can be
overridden from the environment as ``VMM_<SECTION>__<KEY>``. Nothing else in the package reads the
environment, so a worker, the API and a test all see the same configuration.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# The shipped configs: ``video_mm/configs`` links to the repository's ``configs/`` in a checkout and
# is a copy of it (package data) in an installed wheel.
CONFIG_DIR = (Path(__file__).resolve().parent / "configs").resolve()
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"


class IOSettings(BaseModel):
    """Limits on what may be opened; every one is explicit so bad input fails fast."""

    max_file_bytes: int = 4 * 2**30
    max_duration_s: float = 4 * 3600.0
    max_width: int = 7680
    max_height: int = 4320
    max_frames: int = 2_000_000
    decode_timeout_s: float = 300.0
    backend: Literal["auto", "decord", "pyav"] = "auto"
    isolate_probe: bool = False  # probe in a child process killed at decode_timeout_s (uploads)
    # decode in a child process per opened file, killed when a call passes decode_timeout_s
    isolate_decode: bool = False
    # A damaged file (cut, or with frames that do not decode) is read for what is there, with a
    # warning; below this share of its frames it fails instead.
    min_decoded_share: float = Field(0.1, ge=0.0, le=1.0)
    # Frames of at least this many pixels are decoded with FFmpeg's frame threads (shorter decodes,
    # 15-30% more CPU time); smaller ones on one thread, where threads cost more than they save.
    frame_threads_min_pixels: int = Field(640 * 360, ge=0)


class SamplingSettings(BaseModel):
    sampler: Literal["uniform", "fps", "keyframes"] = "uniform"
    n_frames: int = 16
    fps: float = 1.0
    size: int | None = 224


class SegmentSettings(BaseModel):
    method: Literal["fixed", "shots"] = "fixed"
    window_s: float = 10.0
    stride_s: float = 10.0
    shot_threshold: float = 27.0
    shot_size: int = 128  # short side frames are decoded at for shot detection
    min_clip_s: float = 1.0


class FeatureSettings(BaseModel):
    backbone: str = "resnet18"
    weights: str = "none"  # none | a state-dict path | a torchvision weights name
    device: str = "auto"
    batch_size: int = Field(32, ge=1)  # frames per forward pass, packed across clips
    queue_size: int = Field(4, ge=1)  # clips decoded ahead of inference
    # in-process runs of several videos: this many videos are prepared and decode in a background
    # thread while the current one is analysed (pipeline/prefetch.py); 0: each in its own turn
    decode_ahead: int = Field(1, ge=0)
    # CPU inference: torch's intra-op threads, set (for the whole process) when the extractor is
    # built; 0: as the process has them (all cores; `vmm worker`: its share of them)
    threads: int = Field(0, ge=0)
    grid: bool = False  # also keep the last spatial grid [T, C, h, w]
    compile: bool = False
    amp: bool = True  # CUDA only; CPU follows `precision`
    # CPU inference: float32, bfloat16 (autocast; CPUs with AVX512-BF16/AMX) or int8 (post-training
    # static quantization, PyTorch x86 engine). The features' backbone name records the choice.
    precision: Literal["float32", "bfloat16", "int8"] = "float32"
    calibration: str = ""  # int8: videos (file or folder) to calibrate on; empty: built-in images
    calibration_frames: int = Field(64, ge=1)
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    cache: bool = True
    cache_url: str = ""  # fsspec URL; empty means <data_dir>/features
    torch_home: str = ""  # where torchvision weight names are found; empty: torch's own
    weights_mirror: str = ""  # base URL holding torchvision's weight files; empty: their own URLs
    offline: bool = False  # never download weights or hub models (HF_HUB_OFFLINE=1 does too)
    download_timeout_s: float = Field(60.0, gt=0)  # per network read while fetching weights


class StorageSettings(BaseModel):
    url: str = ""
    options: dict[str, Any] = Field(default_factory=dict)  # fsspec options, e.g. endpoint_url
    chunk_bytes: int = 1 << 20


class CatalogSettings(BaseModel):
    url: str = ""
    busy_timeout_s: float = 30.0
    pool_size: int = 5


class SearchSettings(BaseModel):
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    candidates: int = 100
    rrf_k: int = 60
    text_weight: float = Field(1.0, ge=0.0)
    merge_gap_s: float = 0.0
    max_k: int = 1000
    max_query_chars: int = 1000
    rerank_k: int = Field(0, ge=0)
    max_rerank_k: int = Field(200, ge=0)


class BrokerSettings(BaseModel):
    """Celery: where jobs queue and how long tasks may run (see ``workers/app.py`` for why)."""

    url: str = ""
    result_backend: str = ""
    result_expires_s: int = 86_400
    task_soft_time_limit_s: int = 1_800
    task_time_limit_s: int = 2_100
    max_retries: int = 3
    retry_backoff_s: float = 5.0
    retry_backoff_max_s: float = 300.0
    visibility_timeout_s: int = 7_200
    max_tasks_per_child: int = 100
    max_memory_per_child_mb: int = 4_096
    concurrency: int = 1
    queue_prefix: str = ""
    # RabbitMQ closes the channel of a message left unacknowledged this long (x-consumer-timeout
    # on our queues; brokers before 3.12 ignore it and use consumer_timeout from rabbitmq.conf).
    consumer_timeout_s: int = 7_200
    # A new pool process (after a crash, the time limit or max_tasks_per_child) loads the models
    # at start on GPU workers: Celery counts it dead if it is not up within this (its default, 4 s,
    # is too short on a loaded machine: the pool then kills and restarts processes for ever).
    process_start_timeout_s: float = Field(120.0, gt=0)


class ReaperSettings(BaseModel):
    """Every job ends: a running step writes a heartbeat, and a reaper (in every worker and in
    ``vmm serve``) sends again, within the retry budget, or fails the job whose step stopped
    reporting (its process was killed: kill -9, the OOM killer, an evicted pod)."""

    enabled: bool = True
    heartbeat_s: float = Field(15.0, gt=0)  # a running step touches its job this often
    stale_after_s: float = Field(120.0, gt=0)  # no heartbeat for this long: the step is dead
    interval_s: float = Field(30.0, gt=0)  # how often the reaper looks
    unsent_after_s: float = Field(30.0, gt=0)  # a queued job never sent this long is sent again


class IndexSettings(BaseModel):
    """Vector index: exact search while small, an approximate index (``ann``) past ``exact_max``."""

    backend: Literal["faiss", "milvus"] = "faiss"
    url: str = ""
    collection: str = "clips"
    exact_max: int = 50_000
    # benchmarks/search.py: IVF keeps recall at 1M; IVF-PQ holds 10M in ~1 GB (pq_m bytes a vector)
    ann: Literal["hnsw", "ivf", "ivfpq", "ivfsq8", "factory"] = "ivf"
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    ivf_nlist: int = 0  # 0: 4 * sqrt(N) lists, fixed when the IVF index is trained
    ivf_nprobe: int = 32
    ivf_train_max: int = 100_000
    pq_m: int = Field(64, ge=1)  # ivfpq: sub-quantizers (bytes a vector at 8 bits); divides dim
    pq_nbits: int = Field(8, ge=1, le=16)
    factory: str = "IVF{nlist},PQ32x4fs"  # ann = "factory" (FAISS only): any IVF recipe
    compact_fraction: float = 0.25
    # FAISS flushes append to a journal beside the base file; the base is rewritten once the
    # journal would pass this share of it and journal_min_bytes (0 and 0: every flush rewrites)
    journal_fraction: float = Field(0.1, ge=0)
    journal_min_bytes: int = Field(32 * 2**20, ge=0)
    milvus_timeout_s: float = 30.0


class ModelSettings(BaseModel):
    captioners: list[str] = Field(default_factory=list)
    retrieval: str = ""
    reranker: str = ""  # the co-attention re-ranker search uses when search.rerank_k > 0
    # Caption decoding (models.decoding.Decoding, for the pipeline, `vmm caption`, `vmm eval`,
    # `vmm explain`): beam width (1 = greedy), words at most, GNMT length penalty alpha (0 = plain
    # log-probability), no n-gram of words twice in a caption (0 = allowed), never a word twice in
    # a row, each earlier use of a word makes it r times less likely (1 = off), captions kept per
    # clip (at most beam_size).
    beam_size: int = Field(3, ge=1)
    max_caption_len: int = Field(20, ge=1)
    length_penalty: float = Field(0.0, ge=0.0)
    no_repeat_ngram: int = Field(3, ge=0)
    no_repeat_adjacent: bool = True
    repetition_penalty: float = Field(1.0, ge=1.0)
    n_best: int = Field(3, ge=1)


class APISettings(BaseModel):
    """`vmm serve`: where it listens, who may write, how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    tokens: list[str] = Field(default_factory=list)
    public_reads: bool = True
    max_upload_bytes: int = Field(2 * 2**30, ge=1)  # one upload (or one batch, all files)
    max_batch_files: int = Field(16, ge=1)
    embedded_worker: bool = True  # run jobs in the server when no broker is configured
    metrics_poll_s: float = Field(1.0, ge=0)  # stage-duration sampling; 0 turns it off
    shutdown_timeout_s: float = Field(30.0, ge=0)  # wait this long for a running job on stop
    preview_max_height: int = Field(480, ge=16)  # browser copies of AVI, GIF, HEVC...: lines
    preview_timeout_s: float = Field(300.0, gt=0)  # give up converting one video after this
    preview_max_concurrent: int = Field(2, ge=1)  # preview transcodes at once; others wait...
    preview_wait_s: float = Field(10.0, ge=0)  # ... this long for a place, then 503
    read_tokens: list[str] = Field(default_factory=list)  # tokens that read but never write
    upload_per_minute: float = Field(120.0, ge=0)  # per client (token, else address); 0: off
    search_per_minute: float = Field(600.0, ge=0)  # per client; 0: off
    rate_burst: int = Field(60, ge=1)  # requests a client may make at once before the rate holds
    min_free_disk_bytes: int = Field(2**30, ge=0)  # uploads get 507 below this much free disk


class Settings(BaseSettings):
    """Everything configurable in video-mm; build with :func:`get_settings` or directly in tests."""

    model_config = SettingsConfigDict(
        env_prefix="VMM_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".vmm")
    # VMM_SHARED_DATA: the real clips and annotations beside the checkout (tests, `vmm demo`).
    shared_data: Path = Path("../shared/data")
    io: IOSettings = Field(default_factory=IOSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    segment: SegmentSettings = Field(default_factory=SegmentSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    reaper: ReaperSettings = Field(default_factory=ReaperSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    api: APISettings = Field(default_factory=APISettings)
    # VMM_API_TOKEN: the one-variable form deployments expect, added to ``api.tokens``.
    api_token: str = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("VMM_CONFIG", DEFAULT_CONFIG))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    # Derived locations: one place decides where things live when no URL is given.
    @property
    def storage_url(self) -> str:
        return self.storage.url or str((self.data_dir / "blobs").resolve())

    @property
    def catalog_url(self) -> str:
        return self.catalog.url or f"sqlite:///{(self.data_dir / 'catalog.db').resolve()}"

    @property
    def broker_url(self) -> str:
        return self.broker.url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def index_url(self) -> str:
        return self.index.url or str((self.data_dir / "index").resolve())

    @property
    def api_tokens(self) -> list[str]:
        return [*self.api.tokens, self.api_token] if self.api_token else list(self.api.tokens)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
