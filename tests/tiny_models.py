"""Tiny models built on the spot, so tests exercise the real loading and scoring code with no download."""

from __future__ import annotations

from pathlib import Path

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


def build_tiny_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with a one-logit head, saved as a sentence-transformers CrossEncoder folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS)]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder
