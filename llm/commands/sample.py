"""Sample text from any trained stage.

llm sample --checkpoint runs/pretrain-tiny --prompt "The" --max-new-tokens 200 --temperature 0.8 --top-k 50
llm sample --checkpoint runs/sft-tiny --chat --prompt "Reverse the words: red green blue"
"""

import argparse
import sys
from pathlib import Path

from llm.settings_checks import model_flags


def parse_args() -> argparse.Namespace:
    parser = model_flags(argparse.ArgumentParser(description="Sample from a run folder or a checkpoint folder."),
                         max_new_tokens=200, temperature=0.8, top_k=50, top_p=1.0, seed=0)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt", action="append", help="a prompt; repeat the flag for a batch of prompts")
    source.add_argument("--prompt-file", help="a file with one prompt per line")
    parser.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt in the chat template as a user turn")
    parser.add_argument("--no-stream", action="store_true", help="print whole samples at the end instead of streaming")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each token (slow; for checking)")
    parser.add_argument("--decode", default="auto", choices=["auto", "dynamic", "static", "graph"],
                        help="the cached decode step: graph (replayed as a CUDA graph; CUDA only, not yet run on a GPU), static "
                             "(the same fixed-shape step run eagerly), dynamic (auto's choice)")
    return parser.parse_args()


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            from llm.errors import DataError

            raise DataError(f"{path}: prompt file not found")
        return [line for line in path.read_text().splitlines() if line.strip()]
    return args.prompt or [""]


def entry() -> int:
    args = parse_args()
    from llm.settings_checks import check_flags

    check_flags(args)  # a bad flag or prompt file fails at once, before torch and the checkpoint load
    texts = read_prompts(args) * args.num_samples
    from llm.chat import chat_prompt_ids, chat_sampling, seeded, text_sampling
    from llm.device import pick_device
    from llm.generate import generate
    from llm.load import load_gpt
    from llm.stream import TokenPrinter

    device = pick_device(args.device)
    loaded = load_gpt(args.checkpoint, device)
    tok = loaded.tokenizer
    print(f"# {loaded.folder} ({loaded.checkpoint.meta.get('stage', '?')}, step {loaded.checkpoint.meta.get('step', '?')})",
          file=sys.stderr)
    if args.chat:
        prompts = [chat_prompt_ids(tok, t) for t in texts]
        params = chat_sampling(tok, args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    else:
        prompts = [[tok.bos_id, *tok.encode(t)] for t in texts]
        params = text_sampling(tok, args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    generator = seeded(loaded.model, args.seed)
    stream = len(prompts) == 1 and not args.no_stream
    printer = TokenPrinter(tok, sys.stdout) if stream else None
    if stream and not args.chat:
        sys.stdout.write(texts[0])
    out = generate(loaded.model, prompts, params, tok.pad_id, use_cache=not args.no_cache, decode=args.decode, generator=generator,
                   on_token=(lambda row, token: printer.add(token)) if printer else None)
    if printer:
        printer.finish()
        return 0
    for n, (text, tokens) in enumerate(zip(texts, out.tokens)):
        prefix = "" if args.chat else text
        print(f"--- sample {n + 1} ---\n{prefix}{tok.decode(tokens)}")
    return 0
