"""What is mutated, against which tests, and the survivors judged equivalent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One module under mutation: its file, the functions in scope (mutmut's mangled names; None is every
    function) and the fast unit tests that cover it."""

    name: str
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] | None = None

    @property
    def module(self) -> str:
        return "hybrid_rerank." + self.path.removesuffix(".py").replace("/", ".")

    @property
    def tree_path(self) -> str:
        return f"src/hybrid_rerank/{self.path}"

    @property
    def patterns(self) -> list[str]:
        if self.functions is None:
            return [f"{self.module}.*"]
        return [f"{self.module}.{function}__mutmut_*" for function in self.functions]

    def in_scope(self, mutant: str) -> bool:
        if not mutant.startswith(self.module + "."):
            return False
        function = mutant[len(self.module) + 1 :].partition("__mutmut_")[0]
        return self.functions is None or function in self.functions


def method(cls: str, name: str) -> str:
    return f"xǁ{cls}ǁ{name}"


U = "tests/unit/"
TARGETS = [
    Target("fusion", "connector/fusion.py", (U + "test_fusion.py", U + "test_stages.py")),
    Target("metrics", "connector/lab/metrics.py", (U + "test_metrics.py",)),
    Target(
        "documents",
        "connector/documents.py",
        (U + "test_documents.py",),
        # Validation and flattening of one record; the file readers around them are not in scope.
        (
            "x_document_from_mapping",
            "x__parse_id",
            "x__valid_metadata_value",
            "x__type_name",
            "x__csv_row_to_mapping",
            method("Document", "to_json"),
        ),
    ),
    Target("stages", "connector/stages.py", (U + "test_stages.py", U + "test_pipeline_assembly.py")),
    Target(
        "pipeline",
        "connector/pipeline.py",
        (U + "test_pipeline_assembly.py",),
        # Assembly and paging: every method of the pipeline and the result's JSON.
        (
            method("SearchResult", "to_json"),
            *(
                method("SearchPipeline", m)
                for m in (
                    "__init__",
                    "_check_index",
                    "search",
                    "search_many",
                    "_checked_k",
                    "_first_stage",
                    "_head",
                    "_assemble",
                    "_client_hybrid",
                    "_server_hybrid",
                    "_why_not_rerank",
                )
            ),
        ),
    ),
    Target("protocol", "workers/protocol.py", (U + "test_protocol.py", U + "test_reranking.py")),
    Target(
        "scorer",
        "workers/scorer.py",
        (U + "test_passages.py", U + "test_reranking.py"),
        (method("CrossEncoderScorer", "passages"), method("CrossEncoderScorer", "score")),
    ),
    Target(
        "opensearch_bodies", "connector/backends/opensearch_bodies.py", (U + "test_opensearch_bodies.py",)
    ),
]
BY_NAME = {t.name: t for t in TARGETS}


def relaxed(line: str) -> list[str]:
    """The three lines mutmut makes of a `zip(..., strict=True)` line: strict None, dropped, False."""
    return [line.replace("strict=True", variant) for variant in ("strict=None", "", "strict=False")]


def judged(function: str, lines: list[str], reason: str) -> dict[tuple[str, str], str]:
    return {(function, line.strip()): reason for line in lines}


ONE_PER_LEG = (
    "one weight per leg by construction ([1.0] * len(legs), or _checked_weights, which refuses any other "
    "count): strict=True never fires"
)
ONE_PER_PASSAGE = (
    "owners and the raw scores have one entry per passage, best one per candidate, by construction: "
    "strict=True never fires"
)
ZIP_LEG = "for weight, leg in zip(leg_weights, legs, strict=True):"
MANY = "queries, pools, outcomes, notes, timings, started, sizes, strict=True"
OFFSETS = "offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, {})["
PAIRS = "raw = self.score_pairs([query] * len(passages), passages, {})"
DESCRIPTION = 'if str(inner.get("description", {})).startswith("within top"):'
# Survivors judged equivalent (no test can tell them from the original), keyed by module, the function and
# the mutated line as mutmut writes it. Each reason says why no behaviour changes.
EQUIVALENT: dict[str, dict[tuple[str, str], str]] = {
    "fusion": {
        **judged(
            "x_rank_leg",
            ["if doc_id not in best or score >= best[doc_id]:"],
            "a repeated id with an equal score stores the same value again, and a dict keeps its first "
            "insertion order: nothing changes",
        ),
        **judged("x_reciprocal_rank_fusion", relaxed(ZIP_LEG), ONE_PER_LEG),
        **judged("x_min_max_fusion", relaxed(ZIP_LEG), ONE_PER_LEG),
        **judged(
            "x_z_score_fusion",
            relaxed("for weight, norm in zip(leg_weights, normalized, strict=True):"),
            ONE_PER_LEG,
        ),
    },
    "metrics": judged(
        "x_ndcg_at_k",
        ["ideal = dcg(sorted((g for g in qrels.values() if g >= 0), reverse=True)[:k])"],
        "grade-0 judgments add a gain of 0 and sort after every positive grade: the same ideal DCG",
    ),
    "documents": judged(
        "x__csv_row_to_mapping",
        relaxed("for name, cell in zip(header, row, strict=True):"),
        "_csv_records passes a row on only when it has as many fields as the header (else it reports the "
        "record): strict=True never fires",
    ),
    "pipeline": {
        **judged(
            "xǁSearchPipelineǁ__init__",
            ["self._index_checked = None"],
            "None is falsy like False: the first search still checks the index, once",
        ),
        **judged(
            "xǁSearchPipelineǁsearch_many",
            [
                *relaxed("for query, query_timings in zip(queries, timings, strict=True):"),
                *relaxed(MANY),
                MANY.replace("strict=True", ")"),
            ],
            "each of these lists is built in this method with one entry per query: strict=True never fires "
            "(the reranker's outcomes, which can fall short, keep a test)",
        ),
    },
    "protocol": {
        **judged(
            "x_queue_for",
            ['digest = hashlib.sha1(model.encode("UTF-8")).hexdigest()[:8]'],
            "codec names are case-insensitive: the same bytes, the same digest",
        ),
        **judged(
            "x_parse_reply",
            ['cached = reply.get("cached", None)', 'cached = reply.get("cached", )'],
            "a missing count is then None, which the isinstance(cached, int) check turns into 0, as the "
            "default 0 gives",
        ),
    },
    "scorer": {
        **judged(
            "xǁCrossEncoderScorerǁpassages",
            [OFFSETS.format(v) for v in ("verbose=None", "", "verbose=True")],
            "verbose only lets transformers log that a text is longer than the tokenizer's model_max_length "
            "(which the tiny test tokenizer does not even have); tokens and offsets are the same",
        ),
        **judged(
            "xǁCrossEncoderScorerǁscore",
            ["model = None", PAIRS.format("None"), PAIRS.format("")],
            "score_pairs loads the model itself when given none (model or self.load()), and load() is "
            "idempotent: the same model scores",
        ),
        **judged(
            "xǁCrossEncoderScorerǁscore",
            ['best: list[float] = [float("-INF")] * len(candidates)'],
            "float() reads infinity case-insensitively: the same -inf",
        ),
        **judged(
            "xǁCrossEncoderScorerǁscore",
            [
                *relaxed("for owner, value in zip(owners, raw.tolist(), strict=True):"),
                *relaxed("return [ScoredCandidate(c.id, s) for c, s in zip(candidates, best, strict=True)]"),
            ],
            ONE_PER_PASSAGE,
        ),
    },
    "opensearch_bodies": judged(
        "x_leg_scores_from_explanation",
        [DESCRIPTION.format(v) for v in ("None", "", '"XXXX"')],
        "any default that does not start with 'within top' ('None', 'XXXX') reads a detail without a "
        "description as BM25, as '' does",
    ),
}
