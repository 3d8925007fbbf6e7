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


def build_tiny_cross_encoder(folder: Path, seed: int = 0, *, hidden: int = 32, layers: int = 2) -> Path:
    """A small BERT (2 layers, 32 wide unless told) with a one-logit head, saved as a sentence-transformers
    CrossEncoder folder. `hidden=384, layers=6` gives MiniLM-L6's size and speed, for tests that need a
    task to take a while."""
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
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2 if hidden < 64 else hidden // 64,
        intermediate_size=hidden * 2 if hidden < 64 else hidden * 4,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder
