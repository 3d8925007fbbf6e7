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


# --- other architectures, each with a tokenizer trained here on the demo corpus ---------------------------

DEMO_CORPUS = Path(__file__).resolve().parents[1] / "connector" / "lab" / "demo_data" / "corpus.jsonl"
# Wider than transformers' 0.02, so a random tiny model's scores spread enough to compare orders.
TINY_INIT_RANGE = 0.2


def demo_texts() -> list[str]:
    import json

    records = [json.loads(line) for line in DEMO_CORPUS.read_text(encoding="utf-8").splitlines() if line]
    return [f"{r.get('title', '')}. {r['text']}" for r in records]


def train_tokenizer(
    model: str, special_tokens: list[str], *, vocab_size: int = 1000, extra: tuple[str, ...] = ()
) -> Any:
    """A `tokenizers` tokenizer trained on the demo corpus (plus `extra` texts): `unigram` (Metaspace, as
    SentencePiece), `bpe` (byte-level, as GPT-2, Qwen, ModernBERT), `spm-bpe` (BPE over "▁"-joined words,
    punctuation apart, as Gemma's SentencePiece) or `wordpiece` (as BERT)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    texts = demo_texts() + list(extra)
    if model == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer: Any = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, unk_token=special_tokens[3]
        )
    elif model == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif model == "spm-bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=special_tokens[3]))
        tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split("\u2581", behavior="merged_with_next"), pre_tokenizers.Punctuation()]
        )
        tokenizer.decoder = decoders.Replace("\u2581", " ")
        trainer = trainers.BpeTrainer(  # the corpus has no line breaks; the prompts do
            vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=["\n"]
        )
    elif model == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special_tokens)
    else:
        raise ValueError(f"unknown tokenizer model {model!r}")
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _pair_template(tokenizer: Any, first: str, sep: str, pair: str) -> None:
    from tokenizers import processors

    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {sep}",
        pair=pair,
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in dict.fromkeys((first, sep))],
    )


def _save_random(folder: Path, tokenizer: Any, architecture: str, seed: int, **config: Any) -> Path:
    """The tokenizer, and a randomly initialised `architecture` (a transformers class name, whose config
    class is the same name up to `For`) of the tiny size, saved together in `folder`."""
    import torch
    import transformers

    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config_class = getattr(transformers, architecture.split("For")[0] + "Config")
    settings = {"num_attention_heads": 2, "initializer_range": TINY_INIT_RANGE, **config}
    settings.setdefault("intermediate_size", settings["hidden_size"] * 2)
    getattr(transformers, architecture)(config_class(vocab_size=len(tokenizer), **settings)).save_pretrained(
        str(folder)
    )
    return folder


def build_tiny_bert_cross_encoder(folder: Path, seed: int = 0, *, hidden: int = 32, layers: int = 2) -> Path:
    """A small BERT with a one-logit head and a WordPiece tokenizer trained on the demo corpus, its weights
    drawn wider than `build_tiny_cross_encoder`'s so that scores spread enough to compare runners' orders."""
    from transformers import BertTokenizer

    trained = train_tokenizer("wordpiece", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], vocab_size=800)
    _pair_template(trained, "[CLS]", "[SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1")
    return _save_random(
        folder,
        BertTokenizer(tokenizer_object=trained),
        "BertForSequenceClassification",
        seed,
        hidden_size=hidden,
        num_hidden_layers=layers,
        max_position_embeddings=512,
        num_labels=1,
    )


def build_tiny_xlmr_cross_encoder(folder: Path, seed: int = 0, *, hidden: int = 32, layers: int = 2) -> Path:
    """A small XLM-RoBERTa with a one-logit head (the architecture of bge-reranker-base/-large/-v2-m3) and a
    Unigram tokenizer trained on the demo corpus, saved as XLM-R's own (fast) tokenizer class."""
    from transformers import XLMRobertaTokenizer

    trained = train_tokenizer("unigram", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], vocab_size=800)
    _pair_template(trained, "<s>", "</s>", "<s> $A </s> </s> $B </s>")
    return _save_random(
        folder,
        XLMRobertaTokenizer(tokenizer_object=trained),
        "XLMRobertaForSequenceClassification",
        seed,
        hidden_size=hidden,
        num_hidden_layers=layers,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )


def build_tiny_modernbert_cross_encoder(
    folder: Path, seed: int = 0, *, hidden: int = 32, layers: int = 2
) -> Path:
    """A small ModernBERT with a one-logit head and a byte-level BPE tokenizer trained on the demo corpus
    (ModernBERT reads no token types: its tokenizer does not make them)."""
    from transformers import PreTrainedTokenizerFast

    trained = train_tokenizer("bpe", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], vocab_size=800)
    _pair_template(trained, "[CLS]", "[SEP]", "[CLS] $A [SEP] $B [SEP]")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=trained,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )
    return _save_random(
        folder,
        tokenizer,
        "ModernBertForSequenceClassification",
        seed,
        hidden_size=hidden,
        num_hidden_layers=layers,
        max_position_embeddings=512,
        global_attn_every_n_layers=2,
        local_attention=16,
        pad_token_id=0,
        cls_token_id=2,
        sep_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
        num_labels=1,
        reference_compile=False,
    )


LLM_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM"}


def build_tiny_llm_reranker(
    folder: Path, arch: str = "qwen3", seed: int = 0, *, hidden: int = 32, layers: int = 2
) -> Path:
    """A small causal LM of `arch` (qwen2, qwen3: Qwen3-Reranker's; gemma: bge-reranker-v2-gemma's) with a
    BPE tokenizer trained on the demo corpus and both prompt formats' texts (byte-level as Qwen's, or over
    "▁"-joined words as Gemma's SentencePiece), so "yes", "no", "Yes" and "No" are single tokens, as in
    the real models' vocabularies."""
    import transformers

    from hybrid_rerank.workers.runtime.llm import BGE_INSTRUCTION, QWEN3_SYSTEM

    gemma = arch == "gemma"
    specials = (
        ["<pad>", "<eos>", "<bos>", "<unk>"] if gemma else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    trained = train_tokenizer(
        "spm-bpe" if gemma else "bpe", specials, extra=(BGE_INSTRUCTION, QWEN3_SYSTEM) * 20
    )
    tokenizer: Any
    if gemma:
        tokenizer = transformers.GemmaTokenizer(
            tokenizer_object=trained,
            pad_token="<pad>",
            eos_token="<eos>",
            bos_token="<bos>",
            unk_token="<unk>",
        )
    else:
        tokenizer = transformers.Qwen2Tokenizer(
            tokenizer_object=trained, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None
        )
    extra: dict[str, Any] = {} if arch == "qwen2" else {"head_dim": hidden // 2}
    if gemma:
        extra["bos_token_id"] = tokenizer.bos_token_id
    return _save_random(
        folder,
        tokenizer,
        LLM_ARCHITECTURES[arch],
        seed,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


LAYERWISE_CODE = Path(__file__).with_name("tiny_layerwise")  # the model's own code, two files
LAYERWISE_MODULE = "modeling_layerwise_minicpm"
LAYERWISE_CONFIG_MODULE = "configuration_layerwise_minicpm"


def build_tiny_layerwise_reranker(
    folder: Path, seed: int = 0, *, hidden: int = 32, layers: int = 4, start_layer: int = 2
) -> Path:
    """A small per-layer-head LLM reranker shaped like bge-reranker-v2-minicpm-layerwise: its own code
    (tests/tiny_layerwise/, copied into the folder and named in `auto_map`; model_type `minicpm`, which
    transformers lacks, so loading needs trust_remote_code), score heads after layers `start_layer` to
    `layers`, and a Llama-style SentencePiece BPE tokenizer (a "▁" prepended to every text, as MiniCPM's)
    trained on the demo corpus and the bge instruction."""
    import json
    import shutil

    import torch
    import transformers
    from tokenizers import normalizers

    from hybrid_rerank.workers.runtime.llm import BGE_INSTRUCTION

    folder.mkdir(parents=True, exist_ok=True)
    trained = train_tokenizer("spm-bpe", ["<pad>", "<s>", "</s>", "<unk>"], extra=(BGE_INSTRUCTION,) * 20)
    trained.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    tokenizer = transformers.LlamaTokenizer(
        tokenizer_object=trained, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(str(folder))
    for module in (LAYERWISE_MODULE, LAYERWISE_CONFIG_MODULE):
        shutil.copyfile(LAYERWISE_CODE / f"{module}.py", folder / f"{module}.py")
    config = {
        "architectures": ["LayerWiseMiniCPMForCausalLM"],
        "model_type": "minicpm",
        "auto_map": {
            "AutoConfig": f"{LAYERWISE_CONFIG_MODULE}.LayerWiseMiniCPMConfig",
            "AutoModelForCausalLM": f"{LAYERWISE_MODULE}.LayerWiseMiniCPMForCausalLM",
        },
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "start_layer": start_layer,
        "initializer_range": TINY_INIT_RANGE,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(loaded, trust_remote_code=True)
    model.save_pretrained(str(folder))
    return folder
