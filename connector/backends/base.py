"""The `Backend` protocol: what the search pipeline needs from a store, whichever store it is."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hybrid_rerank.connector.documents import Document, MetadataValue, Scalar
from hybrid_rerank.connector.errors import ConfigurationError, DocumentFailure, IndexMismatchError
from hybrid_rerank.connector.fusion import FusionMethod

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Range:
    """A numeric range filter; either bound may be open."""

    gte: float | None = None
    lte: float | None = None


# field -> a value (equality), a list of values (any of them) or a Range.
FilterValue = Scalar | list[Scalar] | Range
Filters = Mapping[str, FilterValue]


@dataclass(frozen=True)
class Passage:
    """Where one passage lies in its document's text: character offsets, `end` exclusive."""

    start: int
    end: int

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True)
class LegHit:
    """One hit of one recall leg, with the leg's raw score; on a passage index the k-NN leg says which
    passage of the document matched best (`passage`, None elsewhere)."""

    document: Document
    score: float
    passage: Passage | None = None


@dataclass(frozen=True)
class Recall:
    """Both recall legs for one query, each best first, with the time each leg took (ms)."""

    bm25: list[LegHit]
    knn: list[LegHit]
    leg_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HybridHit:
    """One hit of a server-side hybrid query: the fused score and each leg's raw score (None: not matched)."""

    document: Document
    score: float
    bm25_score: float | None
    vector_score: float | None


@dataclass(frozen=True)
class IndexInfo:
    """What an index was built with; searching it with another embedding model is refused."""

    name: str
    embedding_model: str
    dimension: int
    count: int
    passages: str = ""  # the passage layout ("200/50 tokens ..."); "" for one vector per document


@dataclass(frozen=True)
class BulkReport:
    """Outcome of a bulk write: every document is either written or listed in `failures`."""

    written: int
    failures: list[DocumentFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class Backend(Protocol):
    """A document store with BM25 and k-NN recall under metadata filters. Implementations subclass it, so
    they inherit the defaults of optional capabilities (`hybrid`) and mypy checks they define the rest."""

    name: str

    def index_info(self) -> IndexInfo | None:
        """The index's build information, or None when it does not exist."""
        ...

    def create_index(
        self, embedding_model: str, dimension: int, *, recreate: bool = False, passages: str = ""
    ) -> IndexInfo:
        """Create the index (or check that the existing one matches the model, dimension and passage
        layout: `passages` labels it, "" for one vector per document)."""
        ...

    def bulk_index(
        self,
        documents: Sequence[Document],
        vectors: Vector,
        passages: Sequence[Sequence[Passage]] | None = None,
    ) -> BulkReport:
        """Insert or replace documents by id with their embeddings: one row per document, or with
        `passages` (a passage index) one row per passage, the documents' passages in order."""
        ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many existed."""
        ...

    def commit(self) -> None:
        """Make every write so far searchable (and, after a re-index, the live index)."""
        ...

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """The stored `content_hash` of each of `ids` that the live index holds (missing ids are absent; a
        document stored without one maps to ""). Incremental indexing asks this for every batch, so a store
        should answer it cheaply, without texts or vectors; this default reads whole documents."""
        return {doc_id: doc.content_hash for doc_id, doc in self.get(ids).items()}

    def all_ids(self) -> Iterator[str]:
        """Every document id in the live index, streamed (for `index --sync`). The default: this store
        cannot list them."""
        raise ConfigurationError(f"the {self.name} backend cannot list its document ids (index --sync)")

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        """The stored documents among `ids`."""
        ...

    def documents(self, ids: Sequence[str]) -> dict[str, Document]:
        """What a search hit shows of each of `ids` (title, text, metadata), in one request: the texts a
        `texts=False` search left out, fetched for the hits that need them. The default reads `get`."""
        return self.get(ids)

    # The search methods below take `texts`: True brings each hit's whole document; False only its id (with
    # the score, and a passage index's matched passage), the document left to `documents` (see `bare`).

    def bm25(
        self, query: str, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> list[LegHit]:
        """Top `size` documents by BM25 over title and text, best first."""
        ...

    def knn(
        self, vector: Vector, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> list[LegHit]:
        """Top `size` documents by cosine similarity to `vector`, best first."""
        ...

    def recall(
        self, query: str, vector: Vector, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> Recall:
        """Both legs under the same filters (in one round trip where the store allows)."""
        ...

    def hybrid(
        self,
        query: str,
        vector: Vector,
        size: int,
        filters: Filters | None,
        *,
        fusion: FusionMethod,
        bm25_weight: float,
        rrf_k: int,
        texts: bool = True,
    ) -> list[HybridHit]:
        """Both legs fused by the store itself (HYBRID_MODE=server), best first, each hit with its legs' raw
        scores. The default: this store cannot, and says what to do instead."""
        raise ConfigurationError(
            f"HYBRID_MODE=server needs OpenSearch with neural-search; the {self.name} backend fuses "
            "client-side (HYBRID_MODE=client)"
        )


def bare(doc_id: str) -> Document:
    """A hit's document as a `texts=False` search gives it: the id alone (title, text and metadata empty)."""
    return Document(id=doc_id, text="")


@dataclass(frozen=True)
class Embedded:
    """One document ready to store: its vectors (one row, or one per passage) and passages (None: a
    document-level vector)."""

    document: Document
    vectors: Vector  # (rows, dimension)
    passages: list[Passage] | None = None


def split_sendable(
    documents: Sequence[Document],
    vectors: Vector,
    dimension: int | None = None,
    passages: Sequence[Sequence[Passage]] | None = None,
) -> tuple[list[Embedded], list[DocumentFailure]]:
    """Groups each document with its vector rows (one, or one per passage), setting aside those whose
    vectors cannot be stored: non-finite values (not even valid JSON) and, when `dimension` is given, the
    wrong length."""
    counts = [1] * len(documents) if passages is None else [len(p) for p in passages]
    if len(counts) != len(documents) or len(vectors) != sum(counts):
        raise ValueError(f"{len(documents)} documents ({sum(counts)} vector rows) but {len(vectors)} vectors")
    accepted: list[Embedded] = []
    failures: list[DocumentFailure] = []
    start = 0
    for position, (doc, count) in enumerate(zip(documents, counts, strict=True)):
        rows = np.asarray(vectors[start : start + count])
        start += count
        if count == 0:
            failures.append(DocumentFailure(doc.id, "no passage to store"))
        elif dimension is not None and rows.shape[1:] != (dimension,):
            failures.append(
                DocumentFailure(doc.id, f"vector has shape {rows.shape[1:]}, index expects ({dimension},)")
            )
        elif not np.all(np.isfinite(rows)):
            failures.append(DocumentFailure(doc.id, "vector has NaN or infinite values"))
        else:
            accepted.append(Embedded(doc, rows, None if passages is None else list(passages[position])))
    return accepted, failures


def matches_filters(metadata: Mapping[str, MetadataValue], filters: Filters | None) -> bool:
    """Whether a document's metadata satisfies every filter (used by the embedded backend).

    Values compare as text, so `year=2021` from the command line matches a stored 2021 or "2021", as a
    keyword field in OpenSearch would. A list-valued field matches when any of its values does.
    """
    if not filters:
        return True
    for name, wanted in filters.items():
        stored = metadata.get(name)
        values = stored if isinstance(stored, list) else [] if stored is None else [stored]
        if isinstance(wanted, Range):
            if not any(_in_range(v, wanted) for v in values):
                return False
            continue
        accepted = {_canonical(w) for w in (wanted if isinstance(wanted, list) else [wanted])}
        if not any(_canonical(v) in accepted for v in values):
            return False
    return True


def _canonical(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _in_range(value: Scalar, bounds: Range) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except ValueError:
        return False
    return (bounds.gte is None or number >= bounds.gte) and (bounds.lte is None or number <= bounds.lte)


def parse_filter(expression: str) -> tuple[str, FilterValue]:
    """Parse a command-line filter: `field=value`, `field=a,b` (any of) or `field=lo..hi` (range)."""
    name, sep, raw = expression.partition("=")
    name = name.strip()
    if not sep or not name or not raw.strip():
        raise ValueError(f"filter {expression!r} is not of the form field=value")
    raw = raw.strip()
    if ".." in raw:
        low, _, high = raw.partition("..")
        try:
            return name, Range(float(low) if low else None, float(high) if high else None)
        except ValueError as exc:
            raise ValueError(f"range filter {expression!r} needs numbers, e.g. year=2019..2021") from exc
    values: list[Scalar] = [v.strip() for v in raw.split(",") if v.strip()]
    return name, values if len(values) > 1 else values[0]


def check_index_matches(
    info: IndexInfo, embedding_model: str, dimension: int, passages: str | None = None
) -> None:
    """Refuse an embedding model whose vectors would not be comparable with the index's, and (`passages`
    given: an indexing run) a passage layout other than the index's, so the two are never mixed."""
    if passages is not None and info.passages != passages:
        built = f"passages {info.passages!r}" if info.passages else "one vector per document"
        wanted = f"passages {passages!r}" if passages else "one vector per document"
        raise IndexMismatchError(
            f"index {info.name!r} was built with {built}, this run asks for {wanted}; index with the same "
            "passage options, or re-index with --recreate"
        )
    if info.dimension != dimension:
        raise IndexMismatchError(
            f"index {info.name!r} holds {info.dimension}-dimensional vectors from {info.embedding_model!r}, "
            f"but EMBEDDING_MODEL {embedding_model!r} makes {dimension}-dimensional ones; "
            "set EMBEDDING_MODEL back, or re-index with --recreate"
        )
    if info.embedding_model != embedding_model:
        raise IndexMismatchError(
            f"index {info.name!r} was built with {info.embedding_model!r}, but EMBEDDING_MODEL is "
            f"{embedding_model!r}; its vectors are not comparable. Set EMBEDDING_MODEL back, or re-index "
            "with --recreate"
        )
