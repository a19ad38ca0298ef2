"""Rank a checkpoint's replies in a browser, and chat with it: the human-feedback step as a web page.

python scripts/serve.py --checkpoint runs/tiny/sft --rank feedback/tiny.jsonl   # then open the page it prints
python scripts/serve.py --checkpoint runs/tiny/ppo                              # the chat page only

The ranking page shows a prompt and K sampled replies; give each a place (1 = best, equal places tie), or
skip, or say all are bad. Every answer is appended to the --rank file before the page moves on, so a reload,
a crash or a restart loses nothing and shows no prompt twice. scripts/rank.py writes the same file.
"""

import argparse
import socket
from pathlib import Path

from llm.cli import main
from llm.feedback.options import add_ranking_flags, check_ranking_flags


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ranking_flags(parser)
    parser.add_argument("--rank", help="the rankings file (JSON Lines) to append to; without it only the chat page is served")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    return parser.parse_args()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the address is printed, so whoever reads it can connect at once."""
    from llm.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535]; got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port, or 0 for a free one") from None
    sock.listen(128)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def open_app(args: argparse.Namespace):
    """The checkpoint's model behind the chat page and, with --rank, a ranking session over the file."""
    from llm.feedback.options import open_model, prompt_items
    from llm.feedback.rankings import RankingFile
    from llm.feedback.session import RankingSession
    from llm.feedback.web import ChatModel, create_app

    opened = open_model(args)
    chat = ChatModel(opened.loaded.model, opened.loaded.tokenizer, opened.lock, args.seed,
                     {"temperature": args.temperature, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens})
    session = None
    if args.rank:
        session = RankingSession(RankingFile(args.rank), prompt_items(args, opened.loaded), opened.sampler, args.target,
                                 args.checkpoint, opened.sampling, args.seed)
    return create_app(chat, session, args.checkpoint)


def entry() -> int:
    args = parse_args()
    check_ranking_flags(args)
    if args.rank and not args.prompts.startswith("builtin") and not Path(args.prompts).is_file():
        from llm.errors import DataError

        raise DataError(f"{args.prompts}: no such prompts file")
    sock = listen(args.host, args.port)  # a busy port fails before the model loads
    app = open_app(args)
    import uvicorn

    url = address(sock)
    print((f"ranking page: {url}/rank   " if args.rank else "") + f"chat page: {url}/chat   (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; every answer is already on disk
        pass
    print("server stopped")
    return 0


if __name__ == "__main__":
    main(entry, interrupted="stopped")
