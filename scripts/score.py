"""Score a reply with a reward model: python scripts/score.py --checkpoint runs/reward-tiny --prompt "What is 2+3?" --response "5"

Several --response flags score several replies to the same prompt, best first.
"""

import argparse

from llm.cli import main


def entry() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a reward run folder or checkpoint")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--response", action="append", required=True, help="a reply to score; repeat for several")
    parser.add_argument("--unfinished", action="store_true", help="score the replies as cut off (no end-of-turn token)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    from llm.settings_checks import check_flags

    check_flags(args)  # --device, before torch and the checkpoint load
    from llm.data.pairs import reply_ids
    from llm.device import pick_device
    from llm.load import load_reward_model
    from llm.reward_model import score_sequences
    from llm.tokenizer import render_prompt

    model, tok, _ = load_reward_model(args.checkpoint, pick_device(args.device))
    prompt = render_prompt(tok, [{"role": "user", "content": args.prompt}])
    sequences = [prompt + reply_ids(tok, r, not args.unfinished) for r in args.response]
    scores = score_sequences(model, sequences, tok.pad_id)
    for score, response in sorted(zip(scores, args.response), reverse=True):
        print(f"{score:+.4f}\t{response}")
    return 0


if __name__ == "__main__":
    main(entry)
