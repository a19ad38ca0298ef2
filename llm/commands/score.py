"""Score a reply with a reward model: llm score --checkpoint runs/reward-tiny --prompt "What is 2+3?" --response "5"

Several --response flags score several replies to the same prompt, best first. With --rankings FILE it
scores every ranking in a rankings file (llm rank, llm serve) and prints how often the
reward model orders a pair as the ranker did, and how often its top-scored reply is one ranked best.
Its "raters" figure is how often two raters of one prompt order two replies the same way (inter-rater
agreement); --raters-only prints just that, without a checkpoint.
"""

import argparse


def entry() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a reward run folder or checkpoint")
    parser.add_argument("--prompt")
    parser.add_argument("--response", action="append", help="a reply to score; repeat for several")
    parser.add_argument("--rankings", help="a rankings file to measure agreement with, instead of --prompt/--response")
    parser.add_argument("--raters-only", action="store_true",
                        help="with --rankings: only the raters' agreement with each other; no checkpoint")
    parser.add_argument("--against", help="with --rankings: a second reward model, compared pair by pair (sign test)")
    parser.add_argument("--unfinished", action="store_true", help="score the replies as cut off (no end-of-turn token)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not args.rankings and not (args.prompt and args.response):
        parser.error("give --prompt and --response, or --rankings FILE")
    if not args.checkpoint and not (args.rankings and args.raters_only):
        parser.error("give --checkpoint (or --rankings FILE --raters-only for the raters' agreement alone)")
    from llm.settings_checks import check_flags

    check_flags(args)  # --device, before torch and the checkpoint load
    import json

    from llm.eval.rankings import rankings_file_report

    if args.raters_only:
        print(json.dumps(rankings_file_report(args.rankings)[0]))
        return 0
    from llm.data.pairs import reply_ids
    from llm.device import pick_device
    from llm.load import load_reward_model
    from llm.reward_model import score_sequences
    from llm.tokenizer import render_prompt

    model, tok, _ = load_reward_model(args.checkpoint, pick_device(args.device))
    if args.rankings:
        other = load_reward_model(args.against, pick_device(args.device))[:2] if args.against else None
        for line in rankings_file_report(args.rankings, (model, tok), other):
            print(json.dumps(line))
        return 0
    prompt = render_prompt(tok, [{"role": "user", "content": args.prompt}])
    sequences = [prompt + reply_ids(tok, r, not args.unfinished) for r in args.response]
    scores = score_sequences(model, sequences, tok.pad_id)
    for score, response in sorted(zip(scores, args.response), reverse=True):
        print(f"{score:+.4f}\t{response}")
    return 0
