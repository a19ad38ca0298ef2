"""Models in and out of Hugging Face transformers.

`export` writes a checkpoint as a folder transformers loads with no custom code (Llama for the default block,
GPT-2 for the classic one); `read` turns a GPT-2 or Llama-architecture transformers model into a checkpoint
this project's stages start from (`init_from=hf:NAME_OR_PATH`). transformers is an optional extra
(`pip install -e '.[hf]'`): it is imported inside the functions that need it, so the rest of the package,
and these modules themselves, import without it.
"""

from __future__ import annotations

from llm.errors import ConfigError

PREFIX = "hf:"  # init_from=hf:NAME_OR_PATH


def require_transformers():
    """The transformers module, or a one-line error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("transformers is not installed: pip install -e '.[hf]' (llm export and init_from=hf: need it)") from None
    return transformers
