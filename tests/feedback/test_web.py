"""The web pages (llm/feedback/web.py, llm serve): the API's answers to good and bad requests, the server
as a process (refused at start, killed mid-submission), and both pages driven in a real headless browser."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest_helpers import PYTHON, REPO
from llm.chat import Reply
from llm.data.rankings import load_rankings, prompt_id
from llm.feedback.rankings import RankingFile
from llm.feedback.session import Item, RankingSession
from llm.feedback.web import ChatModel, create_app, reply_events

CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's; never let Selenium Manager fetch one
INSTALL_BROWSER = "no headless browser: apt-get install chromium chromium-driver, and pip install selenium"


def fake_sample(prompts, seed):
    return [[Reply(f"{p[-1]['content']} r{i}") for i in range(3)] for p in prompts]


LOCAL = "http://127.0.0.1:8000"  # what a browser on this machine sends as its Host


def app_client(path: Path, rank: bool = True) -> TestClient:
    """The app over a fake sampler; its chat model is never reached by these requests."""
    items = iter([Item([{"role": "user", "content": f"q{i}"}]) for i in range(10)])
    session = RankingSession(RankingFile(path), items, fake_sample, target=5) if rank else None
    return TestClient(create_app(ChatModel(None, None, threading.Lock()), session), base_url=LOCAL)


# (method, path, body with {id} for the tab's current prompt, what the one-line error says)
BAD_REQUESTS = [
    ("POST", "/api/rank/give", "{not json", "not valid JSON"),
    ("POST", "/api/rank/give", "[1, 2]", "must be a JSON object"),
    ("POST", "/api/rank/give", '{"id": "{id}", "ranking": [[0], [1], [2]]}', "a tab id"),
    ("POST", "/api/rank/give", '{"tab": "t", "ranking": [[0], [1], [2]]}', "missing field 'id'"),
    ("POST", "/api/rank/give", '{"tab": "t", "id": "{id}", "ranking": [[0], [0], [1]]}', "each of the 3 replies (0-2) exactly once"),
    ("POST", "/api/rank/give", '{"tab": "t", "id": "{id}", "ranking": [[0], [1]]}', "each of the 3 replies (0-2) exactly once"),
    ("POST", "/api/rank/give", '{"tab": "t", "id": "{id}", "ranking": [[0, "1"], [2]]}', "list of lists of reply numbers"),
    ("POST", "/api/rank/give", '{"tab": "t", "id": "{id}", "ranking": [], "status": "great"}', "status must be one of"),
    ("POST", "/api/rank/give", '{"tab": "t", "id": "0123456789abcdef", "ranking": [[0], [1], [2]]}', "not the one this tab shows"),
    ("POST", "/api/rank/current", "{}", "a tab id"),
    ("POST", "/api/rank/prompt", '{"tab": "t", "text": "  "}', "the prompt is empty"),
    ("POST", "/api/rank/undo", '{"tab": 7}', "a tab id"),
    ("POST", "/api/chat", "{}", "missing field 'messages'"),
    ("POST", "/api/chat", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
     "the last message must be the user's"),
    ("POST", "/api/chat", '{"messages": [{"role": "system", "content": "hi"}]}', "messages[0] must be"),
    ("POST", "/api/chat", '{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}',
     "field 'temperature' must be at least 0; got -1"),
    ("POST", "/api/chat", '{"messages": [{"role": "user", "content": "hi"}], "top_k": "5"}', "'top_k' has the wrong type"),
    ("POST", "/api/chat", '{"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 1000000}', "at most 1024"),
]


@pytest.mark.parametrize("method, url, body, reason", BAD_REQUESTS, ids=[f"{b} {r}" for _, _, b, r in BAD_REQUESTS])
def test_a_malformed_request_gets_a_4xx_with_a_one_line_reason_and_writes_nothing(method, url, body, reason, tmp_path):
    path = tmp_path / "r.jsonl"
    client = app_client(path)
    item_id = client.post("/api/rank/current", json={"tab": "t"}).json()["item"]["id"]
    content = body.replace("{id}", item_id).encode() if body else None
    response = client.request(method, url, content=content, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert reason in error and "\n" not in error
    assert path.read_bytes() == b""


def test_a_given_ranking_is_on_disk_when_the_answer_returns_and_undo_appends_a_tombstone(tmp_path):
    path = tmp_path / "r.jsonl"
    client = app_client(path)
    item = client.post("/api/rank/current", json={"tab": "t"}).json()["item"]
    answer = client.post("/api/rank/give", json={"tab": "t", "id": item["id"], "ranking": [[2], [0, 1]]}).json()
    assert answer["progress"] == {"ranked": 1, "done": 1, "target": 5}
    [line] = path.read_text().splitlines()
    assert json.loads(line)["ranking"] == [[2], [0, 1]] and json.loads(line)["replies"] == item["replies"]
    assert client.post("/api/rank/undo", json={"tab": "t"}).json() == {"undone": True}
    assert json.loads(path.read_text().splitlines()[1])["undo"] == item["id"]
    assert client.post("/api/rank/current", json={"tab": "t"}).json()["item"] == item  # the same replies, to rank again


def test_without_a_rankings_file_only_the_chat_is_served(tmp_path):
    client = app_client(tmp_path / "r.jsonl", rank=False)
    page = client.get("/rank")
    assert page.status_code == 404 and "--rank FILE" in page.text
    assert client.post("/api/rank/current", json={"tab": "t"}).status_code == 404
    assert client.get("/", follow_redirects=False).headers["location"] == "/chat"
    assert client.get("/chat").status_code == 200 and client.get("/api/info").json()["rank"] is False


# (method, path, headers, body, status, what the error says): a page of another site, or a rebinding DNS name
FORGED = [
    ("POST", "/api/rank/give", {"Content-Type": "text/plain"}, '{"tab": "t", "id": "{id}", "ranking": [[0], [1], [2]]}', 415,
     "Content-Type: application/json"),
    ("POST", "/api/rank/give", {"Content-Type": "application/json", "Origin": "http://evil.example"},
     '{"tab": "t", "id": "{id}", "ranking": [[0], [1], [2]]}', 403, "another site"),
    ("POST", "/api/rank/prompt", {"Content-Type": "application/json", "Host": "evil.example:8000"}, '{"tab": "t", "text": "mine"}',
     403, "not this server's name"),
    ("POST", "/api/chat", {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
     '{"messages": [{"role": "user", "content": "hi"}]}', 403, "another site"),
    ("GET", "/api/rank/current?tab=u", {}, None, 405, None),
    ("POST", "/api/rank/prompt", {"Content-Type": "application/json", "Content-Length": "lots"}, '{"tab": "t", "text": "x"}',
     400, "Content-Length must be a number"),
]


@pytest.mark.parametrize("method, url, headers, body, status, reason", FORGED, ids=[f"{m} {u} {h}" for m, u, h, *_ in FORGED])
def test_a_cross_site_or_rebound_request_is_refused_and_writes_and_holds_nothing(method, url, headers, body, status, reason, tmp_path):
    path = tmp_path / "r.jsonl"
    client = app_client(path)
    item_id = client.post("/api/rank/current", json={"tab": "t"}).json()["item"]["id"]
    content = body.replace("{id}", item_id).encode() if body else None
    response = client.request(method, url, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert reason is None or reason in response.json()["error"]
    assert path.read_bytes() == b""
    assert client.post("/api/rank/current", json={"tab": "v"}).json()["item"]["prompt"][0]["content"] == "q1"  # q1 still free


def test_the_same_origin_page_is_served_with_headers_that_forbid_framing_and_sniffing(tmp_path):
    client = app_client(tmp_path / "r.jsonl")
    for response in (client.get("/rank"), client.get("/static/rank.js"), client.post("/api/rank/current", json={})):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'; default-src 'self'"
        assert response.headers["x-content-type-options"] == "nosniff" and response.headers["referrer-policy"] == "no-referrer"
    same = client.post("/api/rank/current", json={"tab": "t"}, headers={"Origin": LOCAL})
    assert same.status_code == 200


OVERSIZED = [
    ("/api/rank/give", "[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    ("/api/chat", '{"messages": [{"role": "user", "content": "' + "x" * (1 << 20) + '"}]}', 413, "over 1048576 bytes"),
    ("/api/rank/prompt", '{"tab": "t", "text": "' + "x" * 5000 + '"}', 400, "at most 4000"),
    ("/api/chat", '{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e-40}', 400, "0 (greedy) or at least 0.01"),
    ("/api/chat", '{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "not valid JSON in UTF-8"),
    ("/api/rank/give", '{"tab": "t", "id": "{id}", "ranking": [' + "[0]," * 10_000 + '[1]]}', 400, "exactly once"),
]


@pytest.mark.parametrize("url, body, status, reason", OVERSIZED, ids=[r for *_, r in OVERSIZED])
def test_an_oversized_or_poisoned_body_is_refused_with_one_short_line(url, body, status, reason, tmp_path):
    client = app_client(tmp_path / "r.jsonl")
    item_id = client.post("/api/rank/current", json={"tab": "t"}).json()["item"]["id"]
    response = client.post(url, content=body.replace("{id}", item_id).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text[:200]
    error = response.json()["error"]
    assert reason in error and "\n" not in error and len(error) < 300


def test_a_body_sent_in_chunks_past_the_limit_is_refused(tmp_path):
    client = app_client(tmp_path / "r.jsonl")
    chunks = (b"x" * 65536 for _ in range(20))  # no Content-Length: the route counts what arrives
    response = client.post("/api/rank/prompt", content=chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_a_failed_write_is_a_503_that_keeps_the_prompt_and_a_conflict_is_a_409(tmp_path, monkeypatch):
    from llm.feedback import rankings

    path = tmp_path / "r.jsonl"
    client, other = app_client(path), app_client(path)  # two servers on one file
    item = client.post("/api/rank/current", json={"tab": "t"}).json()["item"]
    assert other.post("/api/rank/current", json={"tab": "t"}).json()["item"]["id"] == item["id"]
    real = rankings.os.write
    monkeypatch.setattr(rankings.os, "write", lambda fd, data: real(fd, data[:163]))
    answer = {"tab": "t", "id": item["id"], "ranking": [[0], [1], [2]]}
    failed = client.post("/api/rank/give", json=answer)
    assert failed.status_code == 503 and "nothing was saved, try again" in failed.json()["error"]
    assert path.read_bytes() == b""
    monkeypatch.setattr(rankings.os, "write", real)
    assert client.post("/api/rank/give", json=answer).status_code == 200  # the same prompt, given again
    conflict = other.post("/api/rank/give", json={**answer, "ranking": [[2], [1], [0]]})
    assert conflict.status_code == 409 and "already ranked by another page" in conflict.json()["error"]
    assert [e.ranking for e in load_rankings(path)] == [[[0], [1], [2]]]


def test_with_tokens_an_api_request_needs_one_and_the_answer_carries_its_raters_name(tmp_path):
    path = tmp_path / "r.jsonl"
    items = iter([Item([{"role": "user", "content": f"q{i}"}]) for i in range(10)])
    session = RankingSession(RankingFile(path), items, fake_sample, target=5)
    app = create_app(ChatModel(None, None, threading.Lock()), session, hosts=None, tokens={"s3cret": "ana"})
    client = TestClient(app, base_url="http://192.0.2.7:8000")
    assert client.post("/api/rank/current", json={"tab": "t"}).status_code == 401
    assert client.get("/rank").status_code == 200  # the page itself is no secret; it reads the token from #token=
    auth = {"Authorization": "Bearer s3cret"}
    item = client.post("/api/rank/current", json={"tab": "t"}, headers=auth).json()["item"]
    client.post("/api/rank/give", json={"tab": "t", "id": item["id"], "ranking": [[0], [1], [2]]}, headers=auth)
    assert [e.rater for e in load_rankings(path)] == ["ana"]


def test_a_client_that_never_finishes_its_request_is_disconnected(tmp_path):
    import socket

    import uvicorn

    from llm.feedback.guard import TimedH11Protocol

    class Quick(TimedH11Protocol):
        read_timeout_s = 0.5

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    server = uvicorn.Server(uvicorn.Config(app_client(tmp_path / "r.jsonl").app, http=Quick, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        slow = [socket.create_connection(sock.getsockname(), timeout=10) for _ in range(2)]
        slow[0].sendall(b"POST /api/rank/give HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        slow[1].sendall(b"POST /api/rank/give HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{")  # a body never finished
        started = time.monotonic()
        assert [s.recv(1024) for s in slow] == [b"", b""]  # closed by the server
        assert time.monotonic() - started < 5
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def loaded(sft_run):
    from llm.load import load_gpt

    return load_gpt(sft_run)


def test_a_chat_reply_streams_piece_by_piece_and_matches_the_terminal_chats_reply(loaded):
    """The page's reply is what llm.chat.reply_to samples with the same seed (scripts/chat.py's template and stops)."""
    import torch

    from llm.chat import chat_sampling, reply_to

    client = TestClient(create_app(ChatModel(loaded.model, loaded.tokenizer, threading.Lock(), seed=0), None), base_url=LOCAL)
    messages = [{"role": "user", "content": "What is the first word in: green apples fall?"}]
    with client.stream("POST", "/api/chat", json={"messages": messages, "temperature": 1.0, "top_k": 0, "max_new_tokens": 24}) as response:
        events = [json.loads(line) for line in response.iter_lines() if line]
    params = chat_sampling(loaded.tokenizer, 24, 1.0, 0, 1.0)
    expected, finished = reply_to(loaded.model, loaded.tokenizer, messages, params, torch.Generator().manual_seed(0))
    assert events[-1].items() >= {"done": True, "finished": finished}.items()
    assert "".join(e["text"] for e in events[:-1]) == expected


def test_a_reply_nobody_reads_any_more_stops_and_frees_the_model(loaded):
    from llm.generate import SamplingParams

    chat = ChatModel(loaded.model, loaded.tokenizer, threading.Lock())
    endless = SamplingParams(max_new_tokens=1024, stop_ids=())  # no stop token: only the page leaving ends it early
    steps = []
    hook = loaded.model.register_forward_hook(lambda *args: steps.append(1))

    async def read_one_event_and_leave():
        events = reply_events(chat, [{"role": "user", "content": "Say cat."}], endless)
        assert "text" in json.loads(await events.__anext__())
        await events.aclose()  # what Starlette does when the client disconnects
        return await asyncio.to_thread(chat.lock.acquire, timeout=60)  # while the loop still takes events

    try:
        assert asyncio.run(read_one_event_and_leave())
    finally:
        hook.remove()
    assert len(steps) < 200, f"{len(steps)} forward passes of 1024: the generation went on after the page left"


# ---- the server as a process ----

def start_server(checkpoint: Path, log: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """scripts/serve.py on a free port; its address, read from the line it prints before serving."""
    command = [PYTHON, "scripts/serve.py", "--checkpoint", str(checkpoint), "--port", "0", "--device", "cpu", *flags]
    with open(log, "w") as out:  # a file, not a pipe: a pipe nobody reads would block the server when full
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for word in log.read_text().split():
            if word.startswith("http://") and word.endswith("/chat"):
                return proc, word.removesuffix("/chat")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the server printed no address: {log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def call(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


BAD_FLAGS = [(["--port", "70000"], "--port must be in [0, 65535]; got 70000"),
             (["--k", "0"], "--k must be 1 or more; got 0"),
             (["--top-p", "0"], "--top-p must be in (0, 1]; got 0.0"),
             (["--rank", "{tmp}/r.jsonl", "--prompts", "{tmp}/mine.txt"], "{tmp}/mine.txt: no such prompts file")]


@pytest.mark.parametrize("flags, expected", BAD_FLAGS, ids=[" ".join(flags) for flags, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_error_line_before_the_model_loads(flags, expected, tmp_path):
    done = subprocess.run([PYTHON, "scripts/serve.py", "--checkpoint", str(tmp_path / "none"), *(f.format(tmp=tmp_path) for f in flags)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.splitlines() == [f"error: {expected.format(tmp=tmp_path)}"], done.stderr


def test_a_reward_checkpoint_is_refused_at_start_with_one_line(reward_run, tmp_path):
    done = subprocess.run([PYTHON, "scripts/serve.py", "--checkpoint", str(reward_run), "--rank", str(tmp_path / "r.jsonl"),
                           "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {reward_run}: a reward model"), line
    assert "http://" not in done.stdout


def test_a_kill_during_submissions_leaves_whole_lines_and_a_restart_shows_a_new_prompt(sft_run, tmp_path):
    path = tmp_path / "r.jsonl"
    proc, url = start_server(sft_run, tmp_path / "server.log", "--rank", str(path), "--k", "2", "--max-new-tokens", "6")
    endings: list[str] = []

    def submit(tab: str) -> None:
        """Rank as fast as the server answers, until it dies (bounded by count and time)."""
        deadline = time.monotonic() + 120
        try:
            for _ in range(500):
                if time.monotonic() > deadline:
                    break
                item = call(f"{url}/api/rank/current", {"tab": tab})["item"]
                call(f"{url}/api/rank/give", {"tab": tab, "id": item["id"], "ranking": [[1], [0]]})
            endings.append("finished")
        except urllib.error.HTTPError as err:  # an answer, not a dead server: the test's own mistake
            endings.append(f"HTTP {err.code}: {err.read()}")
        except (OSError, http.client.HTTPException):  # refused, reset, or killed halfway through a reply
            endings.append("cut off")

    threads = [threading.Thread(target=submit, args=(f"tab{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < 12):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for thread in threads:
        thread.join(timeout=60)
    assert endings == ["cut off"] * 4  # every thread was still submitting when the server died
    records = [json.loads(line) for line in path.read_bytes().splitlines()]  # every line whole
    assert len(records) >= 12 and all(r["status"] == "ranked" for r in records)
    proc, url = start_server(sft_run, tmp_path / "restart.log", "--rank", str(path), "--k", "2", "--max-new-tokens", "6")
    try:
        item = call(f"{url}/api/rank/current", {"tab": "new"})["item"]
    finally:
        stop_server(proc)
    assert item["id"] not in {r["id"] for r in records}


# ---- both pages in a headless browser ----

@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(INSTALL_BROWSER)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not os.access(CHROMEDRIVER, os.X_OK):
        pytest.skip(INSTALL_BROWSER)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(sft_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    # LLM_SCREENSHOT_CHECKPOINT: the README's screenshots come from the demo's SFT model, not the test's tiny one
    checkpoint = os.environ.get("LLM_SCREENSHOT_CHECKPOINT") or sft_run
    proc, url = start_server(checkpoint, folder / "server.log", "--rank", str(folder / "rankings.jsonl"), "--k", "3",
                             "--max-new-tokens", "12", "--target", "20")
    yield url, folder / "rankings.jsonl"
    stop_server(proc)


def wait_for(driver, condition, what: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def shown_item(driver, not_in: tuple[str, ...] = ()) -> str:
    """The id of the prompt the rank page shows, once its replies are on the page and its buttons work again."""
    from selenium.webdriver.common.by import By

    def ready(d):
        item_id = d.find_element(By.ID, "prompt").get_attribute("data-item-id")
        idle = d.find_element(By.ID, "submit").is_enabled()
        return item_id if item_id and item_id not in not_in and idle else None

    return wait_for(driver, ready, "a new prompt on the rank page")


def place_replies(driver, places: list[int]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    selects = driver.find_elements(By.CSS_SELECTOR, "#replies select")
    assert len(selects) == len(places)
    for select, place in zip(selects, places):
        Select(select).select_by_visible_text(str(place))


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("LLM_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


# places picked on the page (1 = best, equal = tied) and the ranking they must be saved as
PLACES = [([3, 1, 2], [[1], [2], [0]]), ([1, 1, 2], [[0, 1], [2]]), ([2, 3, 1], [[2], [0], [1]])]


def test_ranking_in_the_browser_loses_nothing_and_repeats_no_prompt(browser, server):
    from selenium.webdriver.common.by import By

    url, path = server
    browser.get(f"{url}/rank")
    given = ()
    for places, _ in PLACES:
        given += (shown_item(browser, given),)
        place_replies(browser, places)
        browser.find_element(By.ID, "submit").click()
    fourth = shown_item(browser, given)
    browser.refresh()
    assert shown_item(browser) == fourth  # a reload keeps the tab's prompt
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(f"{url}/rank")
    assert shown_item(browser) not in given + (fourth,)  # another tab gets a prompt of its own
    browser.close()
    browser.switch_to.window(first_tab)
    assert browser.find_element(By.ID, "progress").text == "3 of 20 ranked"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["id"], r["ranking"], r["status"]) for r in records] == [(i, ranking, "ranked") for i, (_, ranking) in zip(given, PLACES)]

    browser.find_element(By.ID, "undo").click()
    assert shown_item(browser, (fourth,)) == given[-1]  # the last ranked prompt is back, to rank again
    assert [r.id for r in load_rankings(path)] == list(given[:2])
    place_replies(browser, [1, 2, 3])
    browser.find_element(By.ID, "submit").click()
    assert shown_item(browser, (given[-1],)) == fourth  # and then the prompt the undo displaced
    assert [(r.id, r.ranking) for r in load_rankings(path)][-1] == (given[-1], [[0], [1], [2]])
    place_replies(browser, [2, 1, 3])
    screenshot(browser, "rank.png")


def test_the_chat_page_streams_a_reply(browser, server):
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(f"{url}/chat")
    wait_for(browser, lambda d: d.find_element(By.ID, "max-new-tokens").get_attribute("value"), "the page's settings")
    for field, value in (("temperature", "0.8"), ("max-new-tokens", "24")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    pieces = []
    # a reply can be a single token; one of a few replies shows the streaming (the seeds are fixed, so this is stable)
    for message in ("What is the last word in: the cat sat?", "Say dog 2 times.", "Hello there!"):
        browser.find_element(By.ID, "input").send_keys(message)
        browser.find_element(By.ID, "send").click()
        reply = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-done]")[len(pieces):] or None,
                         "a finished reply")[0]
        assert reply.text.strip()
        pieces.append(int(reply.get_attribute("data-pieces")))
        if pieces[-1] > 1:
            break
    assert pieces[-1] > 1, f"every reply came as one piece: {pieces}"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".conversation .user")) == len(pieces)
    screenshot(browser, "chat.png")
    browser.find_element(By.ID, "new").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".conversation .turn") == []


FORGED_PAGE = """<!doctype html><title>forging</title><script>
async function forge(mode, type) {{
  const send = (path, body) => fetch("{url}" + path, {{method: "POST", mode, headers: {{"Content-Type": type}},
                                                     body: JSON.stringify(body)}}).catch(() => null);
  await send("/api/rank/prompt", {{tab: "x", text: "forged prompt"}});  // its id is known: a hash of the text
  await send("/api/rank/give", {{tab: "x", id: "{id}", ranking: [[0], [1], [2]]}});
  await send("/api/chat", {{messages: [{{role: "user", content: "forged chat"}}]}});
}}
forge("no-cors", "text/plain").then(() => forge("cors", "application/json")).then(() => {{ document.title = "done"; }});
</script>"""


def test_a_page_of_another_origin_cannot_write_a_ranking_type_a_prompt_or_chat(browser, server, tmp_path):
    """What a malicious site could make a rater's browser send: a 'simple' text/plain POST and a JSON one."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    url, path = server
    before = path.read_bytes() if path.exists() else b""
    forged_id = prompt_id([{"role": "user", "content": "forged prompt"}])
    (tmp_path / "forge.html").write_text(FORGED_PAGE.format(url=url, id=forged_id))
    other = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{other.server_address[1]}/forge.html")
        wait_for(browser, lambda d: d.title == "done", "the forged requests to settle")
    finally:
        other.shutdown()
    assert (path.read_bytes() if path.exists() else b"") == before


def test_a_rankings_file_that_cannot_be_written_is_one_error_line_before_the_model_loads(tmp_path):
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "r.jsonl"  # its folder is a file: nothing can be created there
    done = subprocess.run([PYTHON, "scripts/serve.py", "--checkpoint", str(tmp_path / "none"), "--rank", str(path), "--port", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"error: {path}: cannot open the rankings file for appending (File exists)"]


def test_the_terminal_is_shown_escape_codes_and_bidi_controls_as_visible_marks():
    from llm.commands import rank as script

    assert script.printable("\x1b[2Jgone\u202eevil\u202c ok\tfine") == "<U+001B>[2Jgone<U+202E>evil<U+202C> ok\tfine"
