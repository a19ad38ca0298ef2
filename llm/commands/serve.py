"""Rank a checkpoint's replies in a browser, and chat with it: the human-feedback step as a web page.

llm serve --checkpoint runs/tiny/sft --rank feedback/tiny.jsonl   # then open the page it prints
llm serve --checkpoint runs/tiny/ppo                              # the chat page only

Beside the pages, an OpenAI-compatible API at <address>/v1 (llm/feedback/openai_api.py) serves the same
model to any standard client: the model's name is the checkpoint's run name, the API key anything on
loopback and a rater's token beyond it.

The ranking page shows a prompt and K sampled replies; give each a place (1 = best, equal places tie), or
skip, or say all are bad. Every answer is appended to the --rank file before the page moves on, so a reload,
a crash or a restart loses nothing and shows no prompt twice. llm rank writes the same file.

On 127.0.0.1 (the default) only this machine's browsers reach the pages, and each answer is written as
--rater's. With --host beyond loopback, each name in --raters gets its own secret address (#token=...),
printed at start; a request without a token is refused, an answer carries its rater's name, and every
request is logged on stderr.
"""

import argparse
import ipaddress
import secrets
import socket
import sys
from pathlib import Path

from llm.feedback.options import add_ranking_flags, check_ranking_flags

INTERRUPTED = "stopped"  # what Ctrl-C says


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ranking_flags(parser)
    parser.add_argument("--rank", help="the rankings file (JSON Lines) to append to; without it only the chat page is served")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--rater", default="person", help="the name written with every answer given on this machine")
    parser.add_argument("--raters", help="with --host beyond loopback: the raters' names, comma-separated, each given "
                                         "its own token (default: --rater)")
    return parser.parse_args()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def rater_tokens(args: argparse.Namespace) -> dict[str, str] | None:
    """token -> rater name for a server exposed beyond loopback; None on loopback, where none is needed."""
    if is_loopback(args.host):
        return None
    names = [name.strip() for name in (args.raters or args.rater).split(",") if name.strip()]
    return {secrets.token_urlsafe(16): name for name in names}


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


def open_app(args: argparse.Namespace, store, tokens: dict[str, str] | None):
    """The checkpoint's model behind the chat page and, with --rank, a ranking session over the file."""
    from llm.feedback.guard import LOOPBACK_NAMES
    from llm.feedback.options import open_model, prompt_items
    from llm.feedback.session import RankingSession
    from llm.feedback.web import ChatModel, create_app

    opened = open_model(args)
    chat = ChatModel(opened.loaded.model, opened.loaded.tokenizer, opened.lock, args.seed,
                     {"temperature": args.temperature, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens})
    session = None
    if args.rank:
        session = RankingSession(store, prompt_items(args, opened.loaded), opened.sampler, args.target,
                                 args.checkpoint, opened.sampling, args.seed, args.rater, raters_per_prompt=args.raters_per_prompt)
    hosts = None if tokens is not None else LOOPBACK_NAMES | {args.host}
    return create_app(chat, session, args.checkpoint, hosts, tokens, log=tokens is not None)


def say_addresses(url: str, rank: bool, tokens: dict[str, str] | None, model: str) -> None:
    pages = (f"ranking page: {url}/rank   " if rank else "") + f"chat page: {url}/chat   API: {url}/v1 (model {model})"
    if tokens is None:
        print(f"{pages}   (Ctrl-C stops)", flush=True)
        return
    print(f"warning: listening beyond this machine; anyone on the network can reach {url}: only the token addresses "
          "below are served, and every request is logged here", file=sys.stderr, flush=True)
    print(f"{pages}   (Ctrl-C stops)", flush=True)
    for token, name in tokens.items():
        print(f"rater {name}: {url}/{'rank' if rank else 'chat'}#token={token}", flush=True)


def entry() -> int:
    args = parse_args()
    check_ranking_flags(args)
    if args.rank and not args.prompts.startswith("builtin") and not Path(args.prompts).is_file():
        from llm.errors import DataError

        raise DataError(f"{args.prompts}: no such prompts file")
    sock = listen(args.host, args.port)  # a busy port fails before the model loads
    store = None
    if args.rank:
        from llm.feedback.rankings import RankingFile

        store = RankingFile(args.rank)  # an unwritable file fails now, before the model loads
    tokens = rater_tokens(args)
    app = open_app(args, store, tokens)
    import uvicorn

    from llm.feedback.guard import TimedH11Protocol
    from llm.feedback.web import model_id

    say_addresses(address(sock), bool(args.rank), tokens, model_id(args.checkpoint))
    config = uvicorn.Config(app, http=TimedH11Protocol, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; every answer is already on disk
        pass
    print("server stopped")
    return 0
