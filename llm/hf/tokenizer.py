"""The tokenizer in transformers' format, both ways: ours saved with the chat template in Jinja, and an
imported model's given this project's special tokens.

The template renders exactly what llm.tokenizer.render_conversation and render_prompt build:
<|bos|>, then each turn as its role token, its content and <|end|>, then <|assistant|> when a reply is
asked for. transformers tokenizes the rendered text with the special tokens split out first and each
stretch between them encoded on its own, which is how render_turns encodes each message's content, so
apply_chat_template gives the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

from llm.errors import CheckpointError
from llm.hf import require_transformers
from llm.tokenizer import BOS, END, EOS, PAD, ROLE_TOKENS, SPECIAL_TOKENS, Tokenizer


def chat_template() -> str:
    """The Jinja chat template, built from the special tokens so the two can never disagree."""
    roles = ", ".join(f"'{role}': '{token}'" for role, token in ROLE_TOKENS.items())
    return (
        "{% set role_tokens = {" + roles + "} %}"
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{% if message['role'] not in role_tokens %}"
        "{{ raise_exception('unknown role ' + message['role'] + ' (system, user, assistant)') }}"
        "{% endif %}"
        "{{ role_tokens[message['role']] + message['content'] + '" + END + "' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + ROLE_TOKENS["assistant"] + "' }}{% endif %}"
    )


def tokenizer_config(max_length: int) -> dict:
    """tokenizer_config.json, written here rather than by transformers: transformers 5 saves its own class name
    (TokenizersBackend) and extra_special_tokens, which 4.x cannot read; both read this form."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",  # tokenizer.json taken as it is
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "additional_special_tokens": [*ROLE_TOKENS.values(), END],
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,  # decode as llm.tokenizer does: " ." stays " ."
        "chat_template": chat_template(),
    }


def save_tokenizer(tok: Tokenizer, folder: Path, max_length: int) -> None:
    (folder / "tokenizer.json").write_text(tok.to_json())
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(max_length), indent=2, ensure_ascii=False) + "\n")


def load_tokenizer(source: str, where: str) -> tuple[Tokenizer, list[int]]:
    """An imported model's tokenizer with this project's special tokens, and the ids of those it lacked."""
    transformers = require_transformers()
    try:
        fast = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{where}: no tokenizer could be loaded ({first_line(exc)})") from None
    if not getattr(fast, "is_fast", False):
        raise CheckpointError(f"{where}: has only a slow (Python) tokenizer; save it with a tokenizer.json")
    backend = HFTokenizer.from_str(fast.backend_tokenizer.to_str())
    missing = [token for token in SPECIAL_TOKENS if backend.token_to_id(token) is None]
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in missing])
    return Tokenizer(backend), [backend.token_to_id(token) for token in missing]


def first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
