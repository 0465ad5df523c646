"""An offline byte-level BPE tokenizer with a model family's special tokens at their real ids.

Synthetic models and weightless twins have no tokenizer download: this one learns a few hundred
merges from a fixed English text, puts the family's special tokens at the ids its config names
(image tokens, turn markers), and fills the rest of the vocabulary so every id decodes.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Iterator

# Text the byte-level BPE learns its merges from: enough for common English words.
BPE_CORPUS = (
    "Describe this image in detail. What is shown in the picture? Describe the colors, "
    "the shapes, the objects and the people in this image. The quick brown fox jumps over "
    "the lazy dog. A photo of a cat sitting on a table next to a window with a view of the "
    "city. There is a red car parked on the street and a tree in the background. "
)
BPE_SIZE = 512


def _filler_tokens(alphabet: list[str], taken: set[str]) -> Iterator[str]:
    chars = sorted(alphabet)
    for size in (2, 3, 4):
        for combo in itertools.product(chars, repeat=size):
            token = "".join(combo)
            if token not in taken:
                yield token


def build_vocab(
    learned: list[str], pinned: dict[str, int], unpinned: list[str], vocab_size: int,
    alphabet: list[str],
) -> dict[str, int]:
    """A full vocabulary: pinned specials at their ids, learned tokens and unpinned specials on
    the free ids from 0 upward, filler tokens (never produced by a merge) on the rest."""
    if any(not 0 <= i < vocab_size for i in pinned.values()):
        raise ValueError(f"a special token id is outside the vocabulary of {vocab_size}: {pinned}")
    by_id = {i: t for t, i in pinned.items()}
    free = (i for i in range(vocab_size) if i not in by_id)
    vocab = dict(pinned)
    for token in [t for t in learned if t not in vocab] + [t for t in unpinned if t not in vocab]:
        vocab[token] = next(free)
    fillers = _filler_tokens(alphabet, set(vocab))
    for token_id in free:
        vocab[next(fillers)] = token_id
    return vocab


def write_tokenizer(
    path: Path, vocab_size: int, pinned: dict[str, int], *, unpinned: list[str] = (),
    tokenizer_config: dict[str, Any], chat_template: str,
) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=BPE_SIZE, initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator([BPE_CORPUS] * 4, trainer)
    data = json.loads(tokenizer.to_str())
    learned = sorted(data["model"]["vocab"], key=data["model"]["vocab"].get)
    vocab = build_vocab(learned, pinned, list(unpinned), vocab_size, alphabet)
    data["model"]["vocab"] = vocab
    specials = list(pinned) + [t for t in unpinned if t not in pinned]
    data["added_tokens"] = [
        {"id": vocab[token], "content": token, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
        for token in specials
    ]
    (path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 262144,
        "clean_up_tokenization_spaces": False,
        **tokenizer_config,
        "chat_template": chat_template,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (path / "chat_template.jinja").write_text(chat_template)


def chat_template(style: dict[str, str]) -> str:
    """A chat template from a family's turn markers: ``bos``, ``user``, ``assistant`` (the
    prefixes of a turn), ``end`` (after a turn) and ``image`` (what an image part becomes)."""
    image = style["image"].replace("'", "\\'")
    return (
        "{{- " + repr(style.get("bos", "")) + " -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}{{- " + repr(style["assistant"]) + " -}}"
        "{%- else -%}{{- " + repr(style["user"]) + " -}}{%- endif -%}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
        "{{- '" + image + "' -}}"
        "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{- " + repr(style["end"]) + " -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- " + repr(style["assistant"]) + " -}}{%- endif -%}"
    )
