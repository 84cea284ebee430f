"""The server backend: a Milvus collection, reached through ``pymilvus``.

For archives beyond one machine: vectors live in a Milvus server (standalone or distributed) that
many workers write to at once. ``url`` is ``http://host:19530`` for a server, or a local ``*.db``
path, which pymilvus serves through ``milvus-lite`` (the same gRPC protocol, a local engine).

One collection per embedding space: a VARCHAR primary key (the clip id) and a FLOAT_VECTOR field.
The vector index is FLAT (exact inner product) while the collection holds at most ``exact_max``
vectors and is rebuilt as HNSW, IVF_FLAT, IVF_PQ or IVF_SQ8 (``settings.ann``) past that, like the
FAISS backend (``ann = "factory"`` is FAISS's own and is refused here). The IVF kinds take the same
list count as FAISS: ``ivf_nlist``, or 4 * sqrt(N) for the N vectors held when the index is built,
built again once the collection holds 4x that (as FAISS retrains); Milvus applies it to each
segment. Build parameters go both as flat keys (Milvus servers) and as one JSON ``params`` key,
the older form, which milvus-lite reads and servers still accept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from video_mm.errors import ConfigError, IndexError_, NotFound
from video_mm.index.base import FORBIDDEN_ID_CHARS, SearchResult, check_queries, check_vectors
from video_mm.settings import IndexSettings

ID_FIELD = "id"
VECTOR_FIELD = "vector"
MAX_ID_LENGTH = 512
MILVUS_ANN = "hnsw, ivf, ivfpq or ivfsq8"
WRITE_BATCH = 1_000  # rows per gRPC request: keeps messages well under the server's size limit


class MilvusIndex:
    """A :class:`~video_mm.index.base.VectorIndex` backed by one Milvus collection."""

    def __init__(
        self, uri: str, collection: str, settings: IndexSettings, dim: int | None = None
    ) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self._errors = (MilvusException,)
        if settings.ann == "factory":
            raise ConfigError(f"index.ann 'factory' is FAISS-only; Milvus takes {MILVUS_ANN}")
        self.uri = uri
        self.collection = collection
        self.settings = settings
        try:
            self._client = MilvusClient(uri=uri, timeout=settings.milvus_timeout_s)
        except self._errors as exc:
            raise IndexError_(f"cannot connect to Milvus at {uri}: {exc}") from exc
        self._dim: int | None = None
        self._index_kind = ""
        self._nlist = 0  # lists of the IVF index now built (0: not an IVF kind)
        if self._client.has_collection(collection):
            self._dim = self._read_dim()
            self._index_kind, self._nlist = self._read_index()
            # A restarted server keeps collections released until asked.
            self._call(self._client.load_collection, collection)
        elif dim is not None:
            self._create(dim)

    @classmethod
    def open(
        cls, url: str, collection: str, settings: IndexSettings, *, dim: int | None = None
    ) -> MilvusIndex:
        """``url``: a server URI, a ``.db`` file for milvus-lite, or a directory to put one in."""
        if "://" not in url and not url.endswith(".db"):
            Path(url).mkdir(parents=True, exist_ok=True)
            url = str(Path(url) / "milvus.db")
        index = cls(url, collection, settings, dim)
        if dim is not None and index.dim != dim:
            raise IndexError_(f"collection {collection} has dimension {index.dim}, asked for {dim}")
        return index

    # -- collection ----------------------------------------------------------------------------

    def _create(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        self._call(
            self._client.create_collection,
            self.collection,
            schema=schema,
            index_params=self._index_params("flat"),
            consistency_level="Strong",
        )
        self._client.load_collection(self.collection)
        self._dim = dim
        self._index_kind = "flat"

    def _index_params(self, kind: str, nlist: int = 0) -> Any:
        """Index parameters of ``kind``; the IVF kinds take ``nlist`` lists."""
        s = self.settings
        params = self._client.prepare_index_params()
        if kind == "flat":
            index_type, build = "FLAT", {}
        elif kind == "hnsw":
            index_type, build = "HNSW", {"M": s.hnsw_m, "efConstruction": s.ef_construction}
        elif kind == "ivf":
            index_type, build = "IVF_FLAT", {"nlist": nlist}
        elif kind == "ivfsq8":
            index_type, build = "IVF_SQ8", {"nlist": nlist}
        elif kind == "ivfpq":
            index_type, build = "IVF_PQ", {"nlist": nlist, "m": s.pq_m, "nbits": s.pq_nbits}
        else:
            raise ConfigError(f"index.ann {kind!r} is FAISS-only; Milvus takes {MILVUS_ANN}")
        params.add_index(
            VECTOR_FIELD, index_type=index_type, metric_type="IP",
            params={**build, "params": build} if build else {},
        )  # fmt: skip
        return params

    def _wanted_nlist(self, n: int) -> int:
        """FAISS's list count for ``n`` vectors (see the module's docstring)."""
        return self.settings.ivf_nlist or max(1, int(4 * np.sqrt(max(n, 1))))

    def _read_dim(self) -> int:
        info = self._client.describe_collection(self.collection)
        for field in info["fields"]:
            if field["name"] == VECTOR_FIELD:
                return int(field["params"]["dim"])
        raise IndexError_(f"collection {self.collection} has no field {VECTOR_FIELD!r}")

    def _read_index(self) -> tuple[str, int]:
        """``(kind, nlist)`` of the index built on the vector field (nlist 0 if not IVF)."""
        names = self._client.list_indexes(self.collection, field_name=VECTOR_FIELD)
        if not names:
            return "", 0
        info = self._client.describe_index(self.collection, names[0])
        kinds = {"HNSW": "hnsw", "IVF_FLAT": "ivf", "IVF_PQ": "ivfpq", "IVF_SQ8": "ivfsq8"}
        kind = kinds.get(str(info.get("index_type")), "flat")
        nested = info.get("params")
        if isinstance(nested, str):  # milvus-lite describes the older JSON form
            nested = json.loads(nested)
        nlist = info.get("nlist") or (nested or {}).get("nlist") or 0
        return kind, int(nlist) if kind in ("ivf", "ivfpq", "ivfsq8") else 0

    def _maybe_reindex(self) -> None:
        """Swap FLAT for the approximate index (or back) when the size crosses ``exact_max``;
        build an IVF index again with more lists once it holds 4x the vectors it was built for."""
        n = len(self)
        wanted = "flat" if n <= self.settings.exact_max else self.settings.ann
        nlist = self._wanted_nlist(n) if wanted in ("ivf", "ivfpq", "ivfsq8") else 0
        if wanted == self._index_kind and (
            not nlist or self.settings.ivf_nlist or nlist < 2 * self._nlist
        ):
            return
        client = self._client
        client.release_collection(self.collection)
        for name in client.list_indexes(self.collection, field_name=VECTOR_FIELD):
            client.drop_index(self.collection, name)
        self._call(client.create_index, self.collection, self._index_params(wanted, nlist))
        client.load_collection(self.collection)
        self._index_kind, self._nlist = wanted, nlist

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def kind(self) -> str:
        return self._index_kind

    @property
    def nlist(self) -> int:
        """Lists of the IVF index now built (0 for the other kinds)."""
        return self._nlist

    def __len__(self) -> int:
        if self._dim is None:
            return 0
        rows = self._call(
            self._client.query, self.collection, filter="", output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    def __contains__(self, id_: object) -> bool:
        if self._dim is None or not isinstance(id_, str):
            return False
        return bool(self._call(self._client.get, self.collection, ids=[id_], output_fields=[]))

    # -- writes --------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = list(ids)
        array = check_vectors(ids, vectors, self._dim)
        if not ids:
            return
        if self._dim is None:
            self._create(int(array.shape[1]))
        for start in range(0, len(ids), WRITE_BATCH):
            rows = [
                {ID_FIELD: id_, VECTOR_FIELD: vector}
                for id_, vector in zip(
                    ids[start : start + WRITE_BATCH],
                    array[start : start + WRITE_BATCH].tolist(),
                    strict=True,
                )
            ]
            self._call(self._client.upsert, self.collection, data=rows)
        self._maybe_reindex()

    def update(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = list(ids)
        missing = set(ids) - self._existing(ids)
        if missing:
            raise NotFound(f"cannot update ids not in the index: {sorted(missing)[:5]}")
        self.add(ids, vectors)

    def delete(self, ids: Iterable[str]) -> int:
        present = sorted(self._existing(list(ids)))
        if present:
            self._call(self._client.delete, self.collection, ids=present)
            self._maybe_reindex()
        return len(present)

    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise IndexError_("an empty prefix would delete everything")
        if any(c in prefix for c in FORBIDDEN_ID_CHARS):
            return 0  # no id holds these characters
        # The server narrows with ``like``; unescaped ``_`` and ``%`` only widen the match
        # (servers disagree on escaping them), and the exact ``startswith`` below decides.
        rows = self._call(
            self._client.query,
            self.collection,
            filter=f'{ID_FIELD} like "{prefix}%"',
            output_fields=[ID_FIELD],
        )
        return self.delete(r[ID_FIELD] for r in rows if r[ID_FIELD].startswith(prefix))

    def _existing(self, ids: list[str]) -> set[str]:
        if self._dim is None or not ids:
            return set()
        found: set[str] = set()
        for start in range(0, len(ids), WRITE_BATCH):
            rows = self._call(
                self._client.get,
                self.collection,
                ids=ids[start : start + WRITE_BATCH],
                output_fields=[ID_FIELD],
            )
            found.update(r[ID_FIELD] for r in rows)
        return found

    # -- search --------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        array = check_queries(queries, self._dim, k)
        if self._dim is None:
            return [[] for _ in range(len(array))]
        params: dict[str, Any] = {"metric_type": "IP"}
        if self._index_kind == "hnsw":
            params["params"] = {"ef": max(self.settings.ef_search, k)}
        elif self._index_kind in ("ivf", "ivfpq", "ivfsq8"):
            params["params"] = {"nprobe": self.settings.ivf_nprobe}
        hits = self._call(
            self._client.search,
            self.collection,
            data=array.tolist(),
            limit=k,
            search_params=params,
            output_fields=[],
        )
        return [[(str(h["id"]), float(h["distance"])) for h in row] for row in hits]

    # -- lifecycle -----------------------------------------------------------------------------

    def flush(self) -> None:
        if self._dim is not None:
            self._call(self._client.flush, self.collection)

    def close(self) -> None:
        self.flush()
        self._client.close()

    def drop(self) -> None:
        """Delete the whole collection (tests and ``vmm index --rebuild``)."""
        if self._client.has_collection(self.collection):
            self._client.drop_collection(self.collection)
        self._dim = None
        self._index_kind = ""

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the client, turning its errors into :class:`IndexError_` (transient: retried)."""
        try:
            return fn(*args, timeout=self.settings.milvus_timeout_s, **kwargs)
        except self._errors as exc:
            raise IndexError_(f"Milvus {fn.__name__} on {self.collection}: {exc}") from exc
