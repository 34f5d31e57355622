"""`allava serve` through the official `openai` client and raw HTTP: answers equal the checkpoint's
own greedy answers (batched or not), OpenAI's stream and error shapes, the limits, the key."""
from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from allava.config import ConfigError
from allava.evaluate.generate import Answerer, Question
from allava.serve.batching import Engine
from allava.serve.config import ServeConfig

from serve_helpers import data_url, image_message, running, tiny_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def ckpt(backbones, tmp_path_factory):
    return tiny_checkpoint(backbones, tmp_path_factory.mktemp("serve") / "tiny-llava")


@pytest.fixture(scope="module")
def engine(ckpt):
    return Engine(Answerer(ckpt))


@pytest.fixture(scope="module")
def server(ckpt, engine):
    with running(ckpt, engine, max_batch_size=8, batch_window_ms=50) as url:
        yield url


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def concurrently(n: int, one) -> None:
    """`one(k)` for k < n, each in its own thread, all started before any is joined (60 s each)."""
    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def test_text_and_image_answers_equal_the_checkpoints_greedy_answers(server, engine, ckpt):
    c = client(server)
    r = c.chat.completions.create(model="tiny-llava", messages=[{"role": "user", "content": "describe the image"}],
                                  max_tokens=8)
    want = engine.answerer.answer([Question([{"from": "human", "value": "describe the image"}])], 8)[0]
    assert r.choices[0].message.content == want and r.choices[0].message.role == "assistant"
    prompt = engine.answerer.encoder.prompt_ids([{"from": "human", "value": "describe the image"}])
    assert r.usage.prompt_tokens == len(prompt) and 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length") and r.model == "tiny-llava"

    url = data_url()
    r = c.chat.completions.create(model="tiny-llava", messages=[image_message("what colour is it", url)],
                                  max_completion_tokens=6)
    from allava.serve.images import _data_url
    import io
    from PIL import Image
    im = Image.open(io.BytesIO(_data_url(url, "x"))).convert("RGB")
    want = engine.answerer.answer([Question([{"from": "human", "value": "<image>\nwhat colour is it"}], im)], 6)[0]
    assert r.choices[0].message.content == want
    n_image = engine.answerer.model.config.image_seq_length
    assert r.usage.prompt_tokens > n_image  # image tokens count in the prompt, as vLLM counts them


def test_stream_is_openai_sse_ending_in_done_and_equals_the_plain_answer(server):
    c = client(server)
    messages = [image_message("what colour is the shape", data_url((30, 60, 220)))]
    plain = c.chat.completions.create(model="tiny-llava", messages=messages, max_tokens=12)
    chunks = list(c.chat.completions.create(model="tiny-llava", messages=messages, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    raw = httpx.post(server + "/v1/chat/completions", json={"messages": messages, "max_tokens": 3, "stream": True},
                     timeout=60)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_multi_turn_history_is_the_training_conversation(server, engine):
    url = data_url((30, 180, 30))
    messages = [{"role": "system", "content": "You look at pictures."}, image_message("what colour is it", url),
                {"role": "assistant", "content": "green"}, {"role": "user", "content": "and the shape?"}]
    r = client(server).chat.completions.create(model="tiny-llava", messages=messages, max_tokens=5)
    conv = [{"from": "human", "value": "<image>\nwhat colour is it"}, {"from": "gpt", "value": "green"},
            {"from": "human", "value": "and the shape?"}]
    from allava.serve.protocol import ChatRequest
    prompt = engine.prompt_ids(ChatRequest(conv, [], "You look at pictures.", 5))
    assert r.usage.prompt_tokens == len(prompt)
    n = engine.answerer.model.config.image_seq_length
    assert engine.answerer.tokenizer.decode(prompt) == (  # LLaVA's conv_vicuna_v1, the system prompt replaced
        "You look at pictures.\nUSER: " + "<image>" * n + "\nwhat colour is it ASSISTANT: green</s>"
        "USER: and the shape? ASSISTANT:")


def test_greedy_answers_are_identical_batched_and_one_at_a_time(ckpt, engine, server):
    """Left padding: a row's answer must not depend on its batch-mates' lengths."""
    asks = []
    for i in range(8):
        text = "what colour is the shape" + " at the top left" * i
        asks.append([image_message(text, data_url((30 * i, 200 - 20 * i, 90), size=(20 + 3 * i, 24)))]
                    if i % 3 else [{"role": "user", "content": text}])

    def all_at_once(url):
        out = [None] * len(asks)
        c = client(url)

        def one(k):
            out[k] = c.chat.completions.create(model="tiny-llava", messages=asks[k], max_tokens=10).choices[0].message.content
        concurrently(len(asks), one)
        return out

    before = httpx.get(server + "/health").json()
    batched = all_at_once(server)
    after = httpx.get(server + "/health").json()
    assert after["row_steps"] - before["row_steps"] > after["steps"] - before["steps"]  # rows shared decode steps
    with running(ckpt, engine, max_batch_size=1) as single_url:
        single = all_at_once(single_url)
        assert httpx.get(single_url + "/health").json()["mean_batch_size"] == 1
    assert batched == single and any(batched)


class PacedEngine(Engine):
    """The real engine with each decode step held `delay` seconds, so staggered requests overlap."""

    def __init__(self, answerer, delay=0.01):
        super().__init__(answerer)
        self.delay = delay

    def decode(self, rows):
        time.sleep(self.delay)
        super().decode(rows)


def test_answers_are_identical_when_requests_join_and_leave_a_running_batch(ckpt, engine):
    """Continuous batching (vLLM's scheduler, `vllm/v1/core/sched/scheduler.py`): requests arriving
    while others decode join the running batch at the next step and leave at their own length; a
    greedy row's answer and a seeded sampled row's answer must still equal the one-at-a-time ones."""
    asks = []
    for i in range(12):
        text = "what is in the picture" + " near the bottom right" * (i % 5)
        messages = ([image_message(text, data_url((20 * i, 180 - 10 * i, 60), size=(18 + 2 * i, 22)))]
                    if i % 2 else [{"role": "user", "content": text}])
        extra = {"temperature": 1.0, "top_p": 0.8, "seed": 100 + i} if i % 4 == 3 else {}
        asks.append((messages, (2, 5, 9, 14)[i % 4], extra))

    def staggered(url):
        out = [None] * len(asks)
        c = client(url)

        def one(k):
            time.sleep(0.02 * k)
            messages, max_tokens, extra = asks[k]
            r = c.chat.completions.create(model="tiny-llava", messages=messages, max_tokens=max_tokens, **extra)
            out[k] = (r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens)
        concurrently(len(asks), one)
        return out

    paced = PacedEngine(engine.answerer)
    with running(ckpt, paced, max_batch_size=8) as url:
        batched = staggered(url)
        h = httpx.get(url + "/health").json()
    assert h["joined_running"] > 0 and h["mean_batch_size"] > 1, h  # rows did join a decoding batch
    with running(ckpt, paced, max_batch_size=1) as single_url:
        single = staggered(single_url)
        assert httpx.get(single_url + "/health").json()["mean_batch_size"] == 1
    assert batched == single and all(batched)
    for (_, max_tokens, _), (_, reason, n) in zip(asks, batched):
        assert n <= max_tokens and (reason == "stop" or n == max_tokens)


def test_sampling_seed_reproduces_and_stop_and_max_tokens_are_honoured(server):
    c = client(server)
    msgs = [{"role": "user", "content": "describe the image"}]
    a, b = (c.chat.completions.create(model="tiny-llava", messages=msgs, max_tokens=10, temperature=1.0, top_p=0.9,
                                      seed=7).choices[0].message.content for _ in range(2))
    assert a == b
    full = c.chat.completions.create(model="tiny-llava", messages=msgs, max_tokens=3)
    assert full.choices[0].finish_reason == "length" or full.usage.completion_tokens < 3
    if full.choices[0].finish_reason == "length":
        assert full.usage.completion_tokens == 3
    longer = c.chat.completions.create(model="tiny-llava", messages=msgs, max_tokens=12).choices[0].message.content
    word = longer.split()[1] if len(longer.split()) > 1 else None
    if word:
        cut = c.chat.completions.create(model="tiny-llava", messages=msgs, max_tokens=12, stop=[word])
        assert cut.choices[0].message.content == longer[:longer.index(word)].strip()
        assert cut.choices[0].finish_reason == "stop"
        streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="tiny-llava", messages=msgs, max_tokens=12, stop=[word], stream=True) if ch.choices)
        assert streamed == cut.choices[0].message.content


def test_models_and_health(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny-llava"]
    h = httpx.get(server + "/health").json()
    assert h["status"] == "ok" and h["queued"] == 0 and "rss_mb" in h


def post(url, body, timeout=60, **kw):
    return httpx.post(url + "/v1/chat/completions", timeout=timeout, **({"json": body} if not isinstance(body, bytes)
                                                                          else {"content": body}), **kw)


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    assert "Traceback" not in r.text
    return body["error"]


@pytest.mark.parametrize("body, param, words", [
    (b"{not json", "body", "not valid JSON"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     "messages[0].content[1].image_url", "not a decodable image"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}]},
     "messages[0].content[0].image_url", "not valid base64"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type", "expected"),
    ({"messages": [{"role": "user", "content": "hi <image> there"}]}, "messages[0].content", "image marker"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages[0].role", "start with a user"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "messages[1].role", "alternate"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature", "outside"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens", "outside"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10 ** 6}, "max_tokens", "--max-new-tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n", "outside"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": []}, "tools", "unsupported"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
     "messages[0].content[0].image_url", "--image-root"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/a.png"}}]}]},
     "messages[0].content[0].image_url", "--allow-remote-images"),
])
def test_malformed_requests_are_400_naming_the_part(server, body, param, words):
    r = post(server, body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == param and err["message"].startswith(param) and words in err["message"]
    assert err["type"] == "invalid_request_error"


def test_unknown_model_and_route_are_404_in_openai_shape(server):
    with pytest.raises(openai.NotFoundError) as e:
        client(server).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"
    assert error_of(httpx.get(server + "/v1/nothing"))["type"] == "not_found_error"


def test_size_limits_are_413(ckpt, engine):
    with running(ckpt, engine, max_body_bytes=2000, max_image_pixels=1000) as url:
        big = post(url, {"messages": [{"role": "user", "content": "x" * 3000}]})
        assert big.status_code == 413 and "--max-body-bytes" in error_of(big)["message"]
        wide = post(url, {"messages": [image_message("hi", data_url(size=(40, 30)))]})
        assert wide.status_code == 413
        err = error_of(wide)
        assert "--max-image-pixels" in err["message"] and err["param"] == "messages[0].content[0].image_url"
    from PIL import Image

    bomb = Image.new("1", (14000, 13000))  # 182 M pixels in 22 kB of PNG: PIL refuses it on open
    import base64
    import io
    buf = io.BytesIO()
    bomb.save(buf, "PNG")
    with running(ckpt, engine, max_image_pixels=10 ** 12) as url:
        r = post(url, {"messages": [image_message("hi", "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())]})
        assert r.status_code == 413 and "--max-image-pixels" in error_of(r)["message"]
    with running(ckpt, engine, max_image_bytes=100) as url:
        heavy = post(url, {"messages": [image_message("hi", data_url(size=(60, 60), fmt="BMP"))]})
        assert heavy.status_code == 413 and "--max-image-bytes" in error_of(heavy)["message"]


def test_api_key_is_required_when_set_and_non_loopback_binds_need_one(ckpt, engine, monkeypatch):
    monkeypatch.setenv("ALLAVA_TEST_KEY", "s3cret")
    with running(ckpt, engine, api_key_env="ALLAVA_TEST_KEY") as url:
        for key in ("none", "wrong"):
            with pytest.raises(openai.AuthenticationError):
                client(url, key).chat.completions.create(model="tiny-llava", messages=[{"role": "user", "content": "hi"}])
        missing = post(url, {"messages": [{"role": "user", "content": "hi"}]})
        assert missing.status_code == 401 and "Bearer" in error_of(missing)["message"]
        ok = client(url, "s3cret").chat.completions.create(model="tiny-llava", max_tokens=2,
                                                           messages=[{"role": "user", "content": "hi"}])
        assert ok.choices[0].message.content is not None
        assert httpx.get(url + "/health").status_code == 200  # the health check needs no key
    with pytest.raises(ConfigError, match="--insecure-no-key"):
        ServeConfig(model=str(ckpt), host="0.0.0.0")
    assert ServeConfig(model=str(ckpt), host="0.0.0.0", insecure_no_key=True).host == "0.0.0.0"
    with pytest.raises(ConfigError, match="ALLAVA_UNSET_KEY"):
        ServeConfig(model=str(ckpt), api_key_env="ALLAVA_UNSET_KEY")


class GatedEngine(Engine):
    """The real engine, but each batch waits for `gate` and each token takes `delay` seconds."""

    def __init__(self, answerer, delay=0.0):
        super().__init__(answerer)
        self.gate, self.delay = threading.Event(), delay
        self.gate.set()

    def prefill(self, jobs):
        assert self.gate.wait(30)
        return super().prefill(jobs)

    def step(self, job, token):
        time.sleep(self.delay)
        super().step(job, token)


def test_a_full_queue_is_429_with_retry_after(ckpt, engine):
    gated = GatedEngine(engine.answerer)
    gated.gate.clear()
    with running(ckpt, gated, max_queue=2, max_batch_size=1) as url:
        results = []
        threads = [threading.Thread(target=lambda: results.append(post(url, {"messages": [
            {"role": "user", "content": "hi"}], "max_tokens": 2}))) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").json()["queued"] + httpx.get(url + "/health").json()["running"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError):
            client(url).chat.completions.create(model="tiny-llava", messages=[{"role": "user", "content": "hi"}])
        full = post(url, {"messages": [{"role": "user", "content": "hi"}]})
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        assert error_of(full)["code"] == "queue_full"
        gated.gate.set()
        for t in threads:
            t.join(30)
        assert [r.status_code for r in results] == [200, 200]


def test_a_client_leaving_mid_stream_frees_its_row(ckpt, engine):
    slow = GatedEngine(engine.answerer, delay=0.05)
    slow.eos = set()  # never stops on its own: only the disconnect can end it early
    with running(ckpt, slow, max_new_tokens=200) as url:
        body = {"messages": [{"role": "user", "content": "describe the image"}], "max_tokens": 200, "stream": True}
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data: ")  # the role chunk: generation has started
        t0 = time.monotonic()
        while True:
            h = httpx.get(url + "/health").json()
            if h["cancelled"] == 1 and h["running"] == 0:
                break
            assert time.monotonic() - t0 < 5, h  # 200 tokens would take 10 s: the row was freed early
            time.sleep(0.05)
        after = client(url).chat.completions.create(model="tiny-llava", max_tokens=2,
                                                    messages=[{"role": "user", "content": "hi"}])
        assert after.usage.completion_tokens == 2  # the server goes on serving


def test_a_client_giving_up_on_a_plain_request_frees_its_row(ckpt, engine):
    slow = GatedEngine(engine.answerer, delay=0.05)
    slow.eos = set()
    with running(ckpt, slow, max_new_tokens=200) as url:
        with pytest.raises(httpx.ReadTimeout):
            post(url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}, timeout=1.0)
        t0 = time.monotonic()
        while (h := httpx.get(url + "/health").json())["cancelled"] != 1 or h["running"]:
            assert time.monotonic() - t0 < 5, h
            time.sleep(0.05)


def test_an_internal_failure_is_a_500_without_a_traceback(ckpt, engine):
    class Broken(Engine):
        def prefill(self, jobs):
            raise RuntimeError("secret internal detail")

    with running(ckpt, Broken(engine.answerer)) as url:
        r = post(url, {"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 500
        err = error_of(r)
        assert "secret" not in r.text and err["type"] == "server_error"
        s = post(url, {"messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert "secret" not in s.text and '"server_error"' in s.text and s.text.endswith("data: [DONE]\n\n")


def test_a_request_failing_to_prefill_leaves_the_running_rows_answering(ckpt, engine):
    """A prefill that raises fails only the requests it was starting; rows already decoding go on."""
    class FailsOnce(PacedEngine):
        def prefill(self, jobs):
            if any("boom" in j.request.conversations[-1]["value"] for j in jobs):
                raise RuntimeError("secret internal detail")
            return super().prefill(jobs)

    broken = FailsOnce(engine.answerer, delay=0.02)
    broken.eos = set()
    with running(ckpt, broken, max_new_tokens=40) as url:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
        result = {}
        first = threading.Thread(target=lambda: result.update(r=post(url, body, timeout=60)))
        first.start()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").json()["steps"] < 3:  # the first request is decoding
            assert time.monotonic() < deadline
            time.sleep(0.02)
        failed = post(url, {"messages": [{"role": "user", "content": "boom"}], "max_tokens": 5})
        first.join(60)
        assert failed.status_code == 500 and "secret" not in failed.text
        assert result["r"].status_code == 200 and result["r"].json()["usage"]["completion_tokens"] == 40
        assert httpx.get(url + "/health").json()["served"] == 1


def test_file_urls_only_under_the_image_root_and_remote_urls_only_when_allowed(ckpt, engine, tmp_path):
    import http.server
    import socketserver

    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (20, 20), (200, 40, 40)).save(root / "red.png")
    Image.new("RGB", (20, 20), (200, 40, 40)).save(tmp_path / "outside.png")
    with running(ckpt, engine, image_root=root) as url:
        ok = post(url, {"messages": [image_message("what colour", (root / "red.png").as_uri())], "max_tokens": 2})
        assert ok.status_code == 200, ok.text
        for bad_url in ((root / ".." / "outside.png").as_posix(), (tmp_path / "outside.png").as_posix()):
            r = post(url, {"messages": [image_message("what colour", "file://" + bad_url)]})
            assert r.status_code == 400 and "outside --image-root" in error_of(r)["message"]
        r = post(url, {"messages": [image_message("hi", (root / "missing.png").as_uri())]})
        assert r.status_code == 400 and "no such file" in error_of(r)["message"]

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Quiet) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        remote = f"http://127.0.0.1:{httpd.server_address[1]}/red.png"
        try:
            with running(ckpt, engine, allow_remote_images=True, remote_timeout_s=5) as url:
                assert post(url, {"messages": [image_message("hi", remote)], "max_tokens": 2}).status_code == 200
                r = post(url, {"messages": [image_message("hi", remote[:-7] + "nope.png")]})
                assert r.status_code == 400 and "HTTP 404" in error_of(r)["message"]
            with running(ckpt, engine, allow_remote_images=True, max_image_bytes=50) as url:
                r = post(url, {"messages": [image_message("hi", remote)]})
                assert r.status_code == 413 and "--max-image-bytes" in error_of(r)["message"]
        finally:
            httpd.shutdown()


def test_several_images_are_each_placed_where_they_appear(server, engine):
    """Like the checkpoint's chat template (`Template.jinja`): each image part is the marker at its place."""
    url = data_url()
    two = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": "and"},
                                        {"type": "image_url", "image_url": {"url": url}}]}]
    r = post(server, {"messages": two, "max_tokens": 2})
    assert r.status_code == 200, r.text
    n = engine.answerer.model.config.image_seq_length
    text_only = post(server, {"messages": [{"role": "user", "content": "<x>\nand<x>\n".replace("<x>", "")}],
                              "max_tokens": 2}).json()
    assert r.json()["usage"]["prompt_tokens"] >= text_only["usage"]["prompt_tokens"] + 2 * n
    five = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}] * 5}]
    r = post(server, {"messages": five})
    assert r.status_code == 400 and "--max-images" in error_of(r)["message"]


@pytest.mark.slow
def test_allava_serve_command_serves_and_stops_on_sigint(ckpt, tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "allava.cli", "serve", "--model", str(ckpt), "--port", str(port),
                             "--max-new-tokens", "4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.2)
        r = client(url).chat.completions.create(model="tiny-llava", messages=[{"role": "user", "content": "hi"}])
        assert r.usage.completion_tokens <= 4
        assert "<html" in httpx.get(url + "/").text.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "allava serve: tiny-llava on http://127.0.0.1" in out and "Traceback" not in out
