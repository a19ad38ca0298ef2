"""Load on the feedback server: chats streamed through the OpenAI-compatible API, ranking answers through the
ranking page's API, and what one rater's page feels like while the chats stream. Writes JSON to --out.

python scripts/bench_serve.py --checkpoint /tmp/bench_runs/sft-tiny --out /tmp/bench_serve.json

It starts scripts/serve.py (with --rank on a fresh file) on a free port, then measures, one after another:
  chats    --streams concurrent chat completions, streamed, each --max-tokens long at most: tokens per
           second over the whole phase, time to first token and per-request latency (p50/p90/p99)
  ranking  one rater answering --answers prompts (each new prompt samples its K replies): answers per
           second and the latency of fetching a prompt and of giving its ranking
  loaded   the same rater, and the chat page's first token, while --streams chats of --loaded-max-tokens stream
The API's chats ask for ignore_eos, so each is --max-tokens long whatever the weights; the ranked replies
(sampled by the ranking session) may end early at their end-of-turn token. The JSON counts the tokens
actually generated (the API's usage).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is the last word in: the quick brown fox jumps over the lazy dog?"}]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="the JSON file of figures to write")
    parser.add_argument("--streams", type=int, default=16, help="concurrent chat streams")
    parser.add_argument("--max-tokens", type=int, default=64, help="each chat reply's and ranked reply's length cap")
    parser.add_argument("--answers", type=int, default=20, help="rankings given in the ranking phase")
    parser.add_argument("--loaded-max-tokens", type=int, default=512,
                        help="each chat's length in the loaded phase: long enough for many of the rater's rounds to fall inside it")
    parser.add_argument("--k", type=int, default=4, help="replies per ranked prompt")
    return parser.parse_args()


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731 - nearest rank
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "n": len(ordered)}


def start_server(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen, str]:
    log = workdir / "serve.log"
    command = [sys.executable, str(REPO / "scripts/serve.py"), "--checkpoint", args.checkpoint, "--port", "0",
               "--device", "cpu", "--rank", str(workdir / "rankings.jsonl"), "--k", str(args.k),
               "--max-new-tokens", str(args.max_tokens), "--target", "100000"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        for word in log.read_text().split():
            if word.startswith("http://") and word.endswith("/chat"):
                return proc, word.removesuffix("/chat")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server printed no address: {log.read_text()}")


def one_stream(client: openai.OpenAI, model: str, max_tokens: int, seed: int) -> dict:
    """One streamed chat completion: its time to first token, its whole time, its tokens."""
    start = time.perf_counter()
    first, tokens = None, 0
    stream = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=max_tokens, temperature=1.0,
                                            seed=seed, stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return {"ttft_s": first if first is not None else time.perf_counter() - start, "latency_s": time.perf_counter() - start,
            "tokens": tokens}


def concurrent_streams(client: openai.OpenAI, model: str, count: int, max_tokens: int, seed: int) -> tuple[list[dict], float, list]:
    results: list[dict] = []
    threads = [threading.Thread(target=lambda i=i: results.append(one_stream(client, model, max_tokens, seed + i))) for i in range(count)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    return results, start, threads


def chat_phase(client: openai.OpenAI, model: str, args: argparse.Namespace) -> dict:
    results, start, threads = concurrent_streams(client, model, args.streams, args.max_tokens, 1000)
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    return {"streams": args.streams, "max_tokens": args.max_tokens, "wall_s": wall, "completion_tokens": tokens,
            "tokens_per_s": tokens / wall, "ttft_s": percentiles([r["ttft_s"] for r in results]),
            "latency_s": percentiles([r["latency_s"] for r in results])}


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def rank_once(url: str, tab: str) -> tuple[float, float]:
    """Fetch the tab's prompt and give its ranking (reply 0 best, and so on): the two latencies."""
    start = time.perf_counter()
    item = post(f"{url}/api/rank/current", {"tab": tab})["item"]
    fetched = time.perf_counter()
    post(f"{url}/api/rank/give", {"tab": tab, "id": item["id"], "ranking": [[i] for i in range(len(item["replies"]))]})
    return fetched - start, time.perf_counter() - fetched


def ranking_phase(url: str, answers: int, tab: str) -> dict:
    fetch, give = [], []
    start = time.perf_counter()
    for _ in range(answers):
        f, g = rank_once(url, tab)
        fetch.append(f)
        give.append(g)
    wall = time.perf_counter() - start
    return {"answers": answers, "wall_s": wall, "answers_per_s": answers / wall, "fetch_prompt_s": percentiles(fetch),
            "give_ranking_s": percentiles(give), "answer_s": percentiles([f + g for f, g in zip(fetch, give)])}


def page_first_token(url: str, max_tokens: int) -> float:
    """The chat page's request: seconds to its first piece of text."""
    body = json.dumps({"messages": QUESTION, "max_new_tokens": max_tokens}).encode()
    request = urllib.request.Request(f"{url}/api/chat", body, {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if "text" in json.loads(line):
                first = time.perf_counter() - start
                break
        else:
            first = time.perf_counter() - start
        response.read()
    return first


def loaded_phase(client: openai.OpenAI, model: str, url: str, args: argparse.Namespace) -> dict:
    """A rater's ranking round and the chat page's first token, measured while --streams chats stream."""
    results, start, threads = concurrent_streams(client, model, args.streams, args.loaded_max_tokens, 2000)
    answers, firsts = [], []

    def while_streaming(measure) -> None:  # the rater's rounds and the chat page's requests each run on their own
        while any(t.is_alive() for t in threads):
            measure()

    probes = [threading.Thread(target=while_streaming, args=(lambda: answers.append(sum(rank_once(url, "loaded"))),)),
              threading.Thread(target=while_streaming, args=(lambda: firsts.append(page_first_token(url, args.max_tokens)),))]
    for t in probes:
        t.start()
    for t in [*threads, *probes]:
        t.join()
    return {"streams": args.streams, "max_tokens": args.loaded_max_tokens, "wall_s": time.perf_counter() - start,
            "answer_s": percentiles(answers), "chat_page_ttft_s": percentiles(firsts) if firsts else None,
            "stream_ttft_s": percentiles([r["ttft_s"] for r in results])}


def entry() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args, Path(tmp))
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=600)
            model = client.models.list().data[0].id
            one_stream(client, model, args.max_tokens, 0)  # warm-up: the worker thread, the first batch's allocations
            figures = {"checkpoint": args.checkpoint, "chats": chat_phase(client, model, args),
                       "ranking": ranking_phase(url, args.answers, "ranking"), "loaded": loaded_phase(client, model, url, args)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    entry()
