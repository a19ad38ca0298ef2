"""What the ranking tools (llm rank, llm serve) share: their flags and how they open a session."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llm.errors import ConfigError
from llm.settings_checks import model_flags


def add_ranking_flags(parser: argparse.ArgumentParser) -> None:
    model_flags(parser, max_new_tokens=64, temperature=1.0, top_k=0, top_p=1.0, seed=0)
    parser.add_argument("--k", type=int, default=4, help="replies sampled per prompt")
    parser.add_argument("--prompts", default="builtin",
                        help="builtin (the built-in tasks), builtin:val (their held-out split), "
                             "or a .jsonl file of {'prompt': ...} or a text file")
    parser.add_argument("--kinds", help="built-in task kinds to ask, comma-separated (default: those the checkpoint's SFT data used)")
    parser.add_argument("--target", type=int, default=50, help="rankings to reach (progress shown against it)")
    parser.add_argument("--raters-per-prompt", type=int, default=1,
                        help="distinct raters each prompt is shown to, for their agreement (llm score --rankings)")


def check_ranking_flags(args: argparse.Namespace) -> None:
    """Before torch loads: every flag that can be wrong says so by name."""
    from llm.settings_checks import check_flags

    check_flags(args)
    for flag, value in (("--k", args.k), ("--target", args.target), ("--raters-per-prompt", args.raters_per_prompt)):
        if value < 1:
            raise ConfigError(f"{flag} must be 1 or more; got {value}")
    if args.kinds:
        from llm.data.tasks import TASK_KINDS

        unknown = [kind for kind in args.kinds.split(",") if kind not in TASK_KINDS]
        if unknown:
            raise ConfigError(f"--kinds: unknown task kind {unknown[0]!r}; kinds are {', '.join(TASK_KINDS)}")


@dataclass
class Opened:
    loaded: object  # llm.load.LoadedModel
    sampler: object  # llm.feedback.session.Sample
    sampling: dict  # the settings written with every ranking
    lock: object  # llm.feedback.replies.FairLock: serialises use of the model


def open_model(args: argparse.Namespace) -> Opened:
    """The checkpoint's language model and a sampler of K replies; a reward model is refused."""
    from llm.chat import chat_sampling
    from llm.device import pick_device
    from llm.feedback.replies import FairLock, model_sampler
    from llm.load import load_gpt

    loaded = load_gpt(args.checkpoint, pick_device(args.device))
    kind = loaded.checkpoint.meta.get("kind", "gpt")
    if kind == "reward":
        raise ConfigError(f"{args.checkpoint}: a reward model, not a language model; give a pretrain, SFT, PPO or DPO run")
    lock = FairLock()  # the chat worker and the ranking sampler take turns in the order they asked
    params = chat_sampling(loaded.tokenizer, args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    sampling = {"k": args.k, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    return Opened(loaded, model_sampler(loaded.model, loaded.tokenizer, args.k, params, lock), sampling, lock)


def prompt_items(args: argparse.Namespace, loaded):
    from llm.feedback.session import builtin_items, file_items

    if args.prompts in ("builtin", "builtin:val"):
        kinds = args.kinds.split(",") if args.kinds else trained_kinds(loaded.checkpoint.config_yaml)
        return builtin_items(args.seed, "val" if args.prompts == "builtin:val" else "train", kinds)
    return file_items(args.prompts)


def trained_kinds(config_yaml: str) -> list[str] | None:
    """The built-in task kinds a checkpoint's training data asked (data.builtin_kinds); None = all or unknown."""
    import yaml

    data = (yaml.safe_load(config_yaml or "") or {}).get("data") or {}
    return list(data.get("builtin_kinds") or []) or None
