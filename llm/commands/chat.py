"""Chat with a fine-tuned model: llm chat --checkpoint runs/sft-tiny

Commands: /reset forgets the conversation, /temperature 0.7 sets the sampling temperature, /exit quits.
"""

import argparse
import sys

from llm.settings_checks import model_flags

INTERRUPTED = "stopped"  # what Ctrl-C says: a chat has no checkpoint to keep


def parse_args() -> argparse.Namespace:
    parser = model_flags(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
                         max_new_tokens=200, temperature=0.7, top_k=50, seed=0)
    parser.add_argument("--system", default="", help="a system message that starts every conversation")
    return parser.parse_args()


def command(session, line: str) -> bool:
    """Handle a /command; False when the user asked to leave."""
    name, _, value = line.partition(" ")
    if name == "/exit":
        return False
    if name == "/reset":
        session.reset()
        print("(conversation reset)")
    elif name == "/temperature":
        set_temperature(session, value)
    else:
        print("(commands: /reset, /temperature X, /exit)")
    return True


def set_temperature(session, text: str) -> None:
    """A bad value is said and ignored: the conversation goes on at the old temperature."""
    from llm.errors import ConfigError
    from llm.settings_checks import check_sampling

    try:
        temperature = float(text)
        check_sampling(temperature=temperature)
    except ValueError:
        print("(usage: /temperature 0.7)")
    except ConfigError as exc:
        print(f"({exc}; temperature stays {session.temperature})")
    else:
        session.temperature = temperature
        print(f"(temperature {session.temperature})")


def entry() -> int:
    args = parse_args()
    from llm.settings_checks import check_flags

    check_flags(args)  # before torch and the checkpoint load
    from llm.chat import ChatSession
    from llm.device import pick_device
    from llm.load import load_gpt
    from llm.stream import TokenPrinter

    loaded = load_gpt(args.checkpoint, pick_device(args.device))
    session = ChatSession(loaded.model, loaded.tokenizer, args.max_new_tokens, args.temperature, args.top_k, args.system, args.seed)
    print(f"chatting with {loaded.folder} ({loaded.checkpoint.meta.get('stage', '?')}); /reset, /temperature X, /exit", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            if not command(session, line):
                return 0
            continue
        sys.stdout.write("bot> ")
        printer = TokenPrinter(loaded.tokenizer, sys.stdout)
        _, finished = session.reply(line, on_token=printer.add)
        printer.finish()
        if not finished:
            print("(reply cut at --max-new-tokens)")
