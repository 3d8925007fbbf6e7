"""Tiny models built on the spot, so tests exercise the real loading and scoring code with no download."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "it",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "which",
    "were",
    "has",
    "have",
    "moon",
    "sun",
    "star",
    "planet",
    "orbit",
    "light",
    "phase",
    "earth",
    "water",
    "heat",
    "cook",
    "steak",
    "rest",
    "grill",
    "oven",
    "bread",
    "salt",
    "heart",
    "blood",
    "pressure",
    "drug",
    "exercise",
    "sleep",
    "diet",
    "database",
    "transaction",
    "crash",
    "log",
    "disk",
    "commit",
    "query",
    "python",
    "snake",
    "language",
    "code",
    "music",
    "pitch",
    "football",
    "ball",
    "goal",
    "team",
    "game",
    "rain",
    "cloud",
    "wind",
    "storm",
    "what",
    "why",
    "how",
    "when",
    "where",
    "who",
    "does",
    "do",
    "can",
    "should",
    "long",
    "good",
    "way",
    "lower",
    "keep",
    "safe",
    "after",
]


def build_tiny_cross_encoder(
    folder: Path, seed: int = 0, *, hidden: int = 32, layers: int = 2, marker: str | None = None
) -> Path:
    """A small BERT (2 layers, 32 wide unless told) with a one-logit head, saved as a sentence-transformers
    CrossEncoder folder. `hidden=384, layers=6` gives MiniLM-L6's size and speed, for tests that need a
    task to take a while.

    With `marker` (a word of WORDS) the random weights are overwritten so that the score is known: 0 for a
    pair without the marker, and clearly positive with it, higher the larger the marker's share of the
    tokens (see `_wire_marker`). Without it the weights stay random, as before."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS)]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:
        # transformers 5 takes the vocabulary itself, and ignores a `vocab_file` keyword: every word would
        # then be [UNK] and the model would read nothing but the length of the text.
        tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    else:
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2 if hidden < 64 else hidden // 64,
        intermediate_size=hidden * 2 if hidden < 64 else hidden * 4,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(config)
    if marker is not None:
        if marker not in WORDS:
            raise ValueError(f"the marker {marker!r} must be one token of WORDS")
        _wire_marker(model, tokenizer.convert_tokens_to_ids(marker))
    model.save_pretrained(str(folder))
    return folder


MARKER_DIM = 0  # the hidden dimension that carries "the marker is here"
MARKER_EMBEDDING = 1.0  # the marker's component along MARKER_DIM (the other components are ~0.02)
MARKER_GAIN = 1.0  # how much of the marker's mean each layer writes into MARKER_DIM (more saturates tanh)
MARKER_SCALE = 10.0  # the classifier's weight on MARKER_DIM


def _wire_marker(model: Any, marker_id: int) -> None:
    """Weights under which one hidden dimension (MARKER_DIM) counts the marker and nothing else.

    - Every embedding row (word, position, token type) gets 0 in MARKER_DIM and a zero mean over the other
      dimensions, so a token's embedding LayerNorm gives exactly 0 in MARKER_DIM, except the marker's row,
      which gets MARKER_EMBEDDING there (after the LayerNorm: about sqrt(hidden)).
    - Attention: query and key weights 0, so every token attends uniformly to every unpadded token; the value
      and output projections copy MARKER_DIM only (times MARKER_GAIN). Each token thus gets, in MARKER_DIM,
      the mean of MARKER_DIM over the pair: 0 without the marker, positive with it, and a LayerNorm of a
      zero-mean vector with 0 there keeps 0 there. The feed-forward blocks output 0.
    - Pooler: tanh of [CLS]'s MARKER_DIM; classifier: MARKER_SCALE times that, no bias.
    So the logit is exactly 0 for a pair without the marker and rises with the marker's share of the tokens
    (the query counts too: keep the marker out of queries). Measured through CrossEncoderScorer (torch or
    ONNX fp32; int8 quantization does not keep these hand-set weights): 0 without the marker, 4.5 to 9.3 with
    it in a 32-token window. Only tanh bounds it, by MARKER_SCALE."""
    import torch

    d = MARKER_DIM
    bert = model.bert
    with torch.no_grad():
        embeddings = bert.embeddings
        for table in (
            embeddings.word_embeddings.weight,
            embeddings.position_embeddings.weight,
            embeddings.token_type_embeddings.weight,
        ):
            table[:, d] = 0.0
            others = [i for i in range(table.shape[1]) if i != d]
            table[:, others] -= table[:, others].mean(dim=1, keepdim=True)
        embeddings.word_embeddings.weight[marker_id, d] = MARKER_EMBEDDING
        embeddings.LayerNorm.weight.fill_(1.0)
        embeddings.LayerNorm.bias.zero_()
        for layer in bert.encoder.layer:
            attention = layer.attention
            for projection in (attention.self.query, attention.self.key):
                projection.weight.zero_()
                projection.bias.zero_()
            for projection, gain in ((attention.self.value, 1.0), (attention.output.dense, MARKER_GAIN)):
                projection.weight.zero_()
                projection.bias.zero_()
                projection.weight[d, d] = gain
            layer.output.dense.weight.zero_()
            layer.output.dense.bias.zero_()
            for norm in (attention.output.LayerNorm, layer.output.LayerNorm):
                norm.weight.fill_(1.0)
                norm.bias.zero_()
        pooler = bert.pooler.dense
        pooler.weight.zero_()
        pooler.bias.zero_()
        pooler.weight[d, d] = 1.0
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[0, d] = MARKER_SCALE
