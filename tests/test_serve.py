"""The OpenAI-compatible self-consistency server, driven by the official openai client over loopback HTTP
(uvicorn on a free port): on a fake backend, and on the embedded 0.5B model."""

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import openai
import pytest
import uvicorn

from answer_fakes import FAKE_BACKEND, register
from conftest import GSM8K_TEST, SMALL_MODEL, free_port
from selfconsistency import SelfConsistency
from selfconsistency.backends import register_backend
from selfconsistency.backends.base import BackendError
from selfconsistency.serve import create_app

API_KEY = "sk-test-9f8e7d6c5b4a"


@contextmanager
def serving(app):
    """The app under uvicorn on a free loopback port; yields the /v1 base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="info"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def fake_server():
    made = register()
    engine = SelfConsistency(model="fake-model", backend=FAKE_BACKEND, paths=5, task="gsm8k")
    with serving(create_app(engine, api_key=API_KEY, max_concurrent=4)) as url:
        yield url, made
    engine.close()


def client(url, key=API_KEY, timeout=60):
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout)


def post(url, body: bytes, key=API_KEY):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ask(question):
    return [{"role": "user", "content": question}]


SYSTEM = {"role": "system", "content": "You are careful. Think in small steps."}
EARLIER = [{"role": "user", "content": "I have 5 apples."}, {"role": "assistant", "content": "Noted: 5 apples."}]


def test_chat_completion_votes_and_sums_usage(fake_server):
    url, bots = fake_server
    response = client(url).chat.completions.create(model="anything", messages=ask("a coin toss"))
    sc = response.self_consistency
    answers = [p["answer"] for p in sc["paths"]]
    assert len(answers) == sc["paths_used"] == 5
    counts = Counter(answers)
    assert sc["votes"] == dict(counts) and sc["answer"] == counts.most_common(1)[0][0]
    assert sc["agreement"] == round(counts[sc["answer"]] / 5, 4)
    assert response.choices[0].message.content == f"Some steps. The answer is {sc['answer']}."
    assert response.model == "fake-model"
    # every path's tokens: the fake bills 100 prompt and 8 completion tokens per path
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == \
        (500, 40, 540)
    assert len(bots[0].calls) == 5


def test_request_overrides(fake_server):
    url, _ = fake_server
    chat = client(url).chat.completions
    by_n = chat.create(model="m", messages=ask("I am sure"), n=3, temperature=0.9, max_tokens=32, seed=7)
    assert by_n.self_consistency["paths_used"] == 3 and by_n.self_consistency["answer"] == "18"
    body = {"self_consistency": {"paths": 12, "stop": "beta:0.9"}}
    adaptive = chat.create(model="m", messages=ask("I am sure"), extra_body=body).self_consistency
    assert adaptive["stopped_by"] == "beta:0.9" and adaptive["paths_used"] < 12
    free_response = chat.create(model="m", messages=ask("Write an essay"),
                                extra_body={"self_consistency": {"answer_type": "free", "paths": 3}})
    free = free_response.self_consistency
    # under USC, votes holds the selection: the fake names "Response 2", the second path shown
    assert free["method"] == "usc" and free["votes"] == {"selected_path": 1, "candidates": 3, "parsed": True}
    assert "selection" not in free
    content = free_response.choices[0].message.content  # the selected path's text, and the answer
    assert content in ("A short essay.", "Another essay.", "A third essay.")
    assert content == free["answer"] and content.rstrip(".").lower() == free["paths"][1]["answer"]


def test_completions_endpoint_answers_each_prompt(fake_server):
    url, _ = fake_server
    response = client(url).completions.create(model="m", prompt=["I am sure", "mute question"])
    assert [c.index for c in response.choices] == [0, 1]
    first, second = response.self_consistency
    assert first["answer"] == "18" and response.choices[0].text == "Some steps. The answer is 18."
    assert second["answer"] is None and second["abstained"] == 5
    assert response.usage.total_tokens == 2 * 5 * 108


def test_auth_is_enforced_and_the_key_never_logged(fake_server, caplog):
    url, _ = fake_server
    caplog.set_level(logging.INFO)
    for key in ("wrong-key", ""):
        with pytest.raises(openai.AuthenticationError) as refused:
            client(url, key=key or "x").chat.completions.create(model="m", messages=ask("I am sure"))
        assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").models.list()
    assert [m.id for m in client(url).models.list()] == ["fake-model"]
    with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=10) as health:  # no key needed
        assert json.loads(health.read()) == {"status": "ok"}
    assert "POST /v1/chat/completions" in caplog.text and API_KEY not in caplog.text


@pytest.mark.parametrize("body,param", [
    (b'{"model": "m", "messages": [', None),  # not JSON
    (b'{"model": "m"}', "messages"),
    (b'{"model": "m", "messages": []}', "messages"),
    (b'{"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}', "messages"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "q"}], "n": 0}', "n"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 0}', "temperature"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "q"}], "self_consistency": {"stop": "nope"}}',
     "self_consistency"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "q"}], "self_consistency": {"votes": 3}}',
     "self_consistency.votes"),
])
def test_malformed_bodies_get_openai_errors(fake_server, body, param):
    url, bots = fake_server
    status, error = post(url + "/chat/completions", body)
    assert status == 400 and error["error"]["type"] == "invalid_request_error" and error["error"]["message"]
    if param:
        assert error["error"]["param"] == param
    assert not bots or not bots[0].calls  # nothing was sampled


def test_openai_client_sees_a_bad_request(fake_server):
    url, _ = fake_server
    with pytest.raises(openai.BadRequestError) as refused:
        client(url).chat.completions.create(model="m", messages=ask("q"), temperature=0)
    assert "temperature" in refused.value.message


def test_stream_sends_one_chunk_then_done(fake_server):
    url, _ = fake_server
    chunks = list(client(url).chat.completions.create(model="m", messages=ask("I am sure"), stream=True))
    assert len(chunks) == 1 and chunks[0].choices[0].delta.content == "Some steps. The answer is 18."
    assert chunks[0].self_consistency["answer"] == "18"


def test_concurrent_requests_all_complete(fake_server):
    url, _ = fake_server
    openai_client = client(url)

    def one(n):
        return openai_client.chat.completions.create(model="m", messages=ask(f"I am sure, number {n}"))

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    assert [r.self_consistency["answer"] for r in responses] == ["18"] * 20


def failing_backend(name: str, failure: Exception) -> str:
    """Register a backend whose every generate call raises `failure`; returns its name."""
    class Failing:
        model = "m"

        def generate(self, requests):
            raise failure
            yield

        def close(self):
            pass

    Failing.name = name
    register_backend(name, lambda config: Failing())
    return name


def test_upstream_failure_is_a_502_with_the_cause():
    broken = failing_backend("broken", BackendError("http://10.0.0.7:8000/v1: upstream said 503: overloaded"))
    engine = SelfConsistency(model="m", backend=broken, paths=2)
    with serving(create_app(engine)) as url:
        with pytest.raises(openai.InternalServerError) as failed:
            client(url).chat.completions.create(model="m", messages=ask("q"))
    assert failed.value.status_code == 502 and "503: overloaded" in failed.value.message
    assert "10.0.0.7" not in failed.value.message  # the upstream's address stays in the server's log


def test_over_an_openai_compatible_upstream(stub_server):
    """Paths from an upstream OpenAI-compatible server (the stub answers 5, 6, 7, ... one per choice)."""
    from conftest import OpenAIStub

    engine = SelfConsistency(model="upstream-model", backend="openai", base_url=stub_server, paths=4,
                             prompt_format="chat")
    with serving(create_app(engine)) as url:
        response = client(url).chat.completions.create(model="m", messages=ask("What is 5 plus a bit?"))
        sc = response.self_consistency
        assert sc["votes"] == {"5": 1, "6": 1, "7": 1, "8": 1} and sc["agreement"] == 0.25
        assert response.choices[0].message.content == f"5 + {int(sc['answer']) - 5} = {sc['answer']}. " \
                                                      f"The answer is {sc['answer']}."
        assert OpenAIStub.calls[-1]["body"]["model"] == "upstream-model" and OpenAIStub.calls[-1]["body"]["n"] == 4
        assert OpenAIStub.calls[-1]["body"]["messages"][0]["role"] == "user"  # no system message was sent
        # one upstream request: its 50 prompt tokens once, and each path's tokens (the stub's log-probs
        # count one per choice)
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (50, 4)
        OpenAIStub.failures_left = 100  # the upstream keeps refusing: past the backend's retries, a 502
        with pytest.raises(openai.InternalServerError) as failed:
            client(url).chat.completions.create(model="m", messages=ask("Another question?"))
        assert failed.value.status_code == 502 and "RateLimitError" in failed.value.message
    engine.close()


def test_a_chat_server_puts_the_system_message_and_earlier_turns_in_the_prompt(stub_server, tmp_path):
    """The system message is the system prompt; earlier turns follow the task's exemplars and precede the
    question; a turn the prompt cannot hold is refused, never dropped."""
    from conftest import OpenAIStub

    engine = SelfConsistency(model="upstream-model", backend="openai", base_url=stub_server, paths=2,
                             prompt_format="chat", run_dir=tmp_path / "run")  # kept: a question asked again is reused
    question = {"role": "user", "content": "How many apples after I buy 2 more?"}
    with serving(create_app(engine)) as url:
        chat = client(url).chat.completions
        response = chat.create(model="m", messages=[SYSTEM, *EARLIER, question])
        sent = OpenAIStub.calls[-1]["body"]["messages"]
        assert sent[0] == SYSTEM and sent[-3:] == [*EARLIER, question]
        middle = sent[1:-3]  # GSM8K's eight exemplars, as user/assistant pairs
        assert len(middle) == 16 and [m["role"] for m in middle] == ["user", "assistant"] * 8
        assert response.self_consistency["paths_used"] == 2
        # the same conversation is answered from its stored paths; the same question in another
        # conversation is another question, sampled anew
        calls = len(OpenAIStub.calls)
        again = chat.create(model="m", messages=[SYSTEM, *EARLIER, question])
        assert len(OpenAIStub.calls) == calls and again.self_consistency == response.self_consistency
        chat.create(model="m", messages=[question])
        assert OpenAIStub.calls[-1]["body"]["messages"][-1] == question
        assert OpenAIStub.calls[-1]["body"]["messages"][0]["role"] == "user"
        chat.create(model="m", messages=[{**SYSTEM, "content": "Be terse."}, question])
        assert len(OpenAIStub.calls) == calls + 2 and OpenAIStub.calls[-1]["body"]["messages"][0]["content"] == \
            "Be terse."
        for messages, refused in [
            ([*EARLIER, SYSTEM, question], "system message (first)"),
            ([{"role": "tool", "content": "42", "tool_call_id": "t1"}, question], "'tool'"),
            ([question, {"role": "assistant", "content": "Let me see"}], "the last message must be the user's"),
        ]:
            with pytest.raises(openai.BadRequestError) as bad:
                chat.create(model="m", messages=messages)
            assert refused in bad.value.message and bad.value.body["param"] == "messages"
        assert len(OpenAIStub.calls) == calls + 2  # nothing refused was sent upstream
    engine.close()


def test_a_chat_server_over_a_completions_api_refuses_turns_it_cannot_send(stub_server):
    from conftest import OpenAIStub

    engine = SelfConsistency(model="upstream-model", backend="openai", base_url=stub_server, paths=2,
                             prompt_format="chat", api="completions")  # the upstream takes one text prompt
    with serving(create_app(engine)) as url:
        calls = len(OpenAIStub.calls)
        with pytest.raises(openai.BadRequestError) as refused:
            client(url).chat.completions.create(model="m", messages=[SYSTEM, *ask("How many apples?")])
        assert "no place for a system message" in refused.value.message
        assert len(OpenAIStub.calls) == calls  # nothing was sent upstream
    engine.close()


def test_a_completion_server_refuses_turns_it_cannot_use(fake_server):
    url, bots = fake_server  # prompt format completion: no place for a system message or earlier turns
    chat = client(url).chat.completions
    for messages in ([SYSTEM, {"role": "user", "content": "I am sure"}], [*EARLIER, {"role": "user", "content": "q"}]):
        with pytest.raises(openai.BadRequestError) as refused:
            chat.create(model="m", messages=messages)
        assert "--prompt-format chat" in refused.value.message and refused.value.body["param"] == "messages"
    assert not bots or not bots[0].calls  # nothing was sampled
    # an empty system message holds nothing to drop
    answered = chat.create(model="m", messages=[{"role": "system", "content": ""}, *ask("I am sure")])
    assert answered.self_consistency["answer"] == "18"


@pytest.fixture
def slow_bots(monkeypatch):
    """answer_fakes' slow bots at 0.1 s a path, and the server looking for gone clients every 0.05 s: the
    production poll (serve.DISCONNECT_POLL_SECONDS) and the bots' pace, a fifth as long."""
    from answer_fakes import SlowBot, register_slow
    from selfconsistency import serve

    monkeypatch.setattr(SlowBot, "seconds", 0.1)
    monkeypatch.setattr(serve, "DISCONNECT_POLL_SECONDS", 0.05)
    return register_slow()


def test_a_request_whose_client_left_while_it_waited_for_a_slot_buys_nothing(slow_bots):
    engine = SelfConsistency(model="m", backend="slowbot", paths=8)  # 8 paths x 0.1 s: 0.8 s a request
    with serving(create_app(engine, max_concurrent=1)) as url:
        first = threading.Thread(target=lambda: client(url).chat.completions.create(
            model="m", messages=ask("a coin toss")))
        first.start()
        time.sleep(0.2)  # the first request holds the only slot
        with pytest.raises(openai.APITimeoutError):  # the second waits for it, and its client gives up
            client(url, timeout=0.3).chat.completions.create(model="m", messages=ask("I am sure"))
        first.join(30)
        time.sleep(0.5)  # the second request gets the slot now: it must see that its client is gone
    engine.close()
    (bot,) = slow_bots["slowbot"]
    assert len(bot.calls) == 8  # the first request's paths, and not one for the request nobody waits for


@pytest.mark.parametrize("backend", ["slowbot", "slowbatchbot"])
def test_a_client_that_disconnects_stops_its_paths(slow_bots, backend):
    engine = SelfConsistency(model="m", backend=backend, paths=40)
    with serving(create_app(engine)) as url:
        with pytest.raises(openai.APITimeoutError):  # the client gives up and closes its connection
            client(url, timeout=0.4).chat.completions.create(model="m", messages=ask("a coin toss"))
        time.sleep(0.6)  # the server notices within a poll and stops at the next path
        (bot,) = slow_bots[backend]
        stopped_at = len(bot.calls)
        time.sleep(0.4)
        assert len(bot.calls) == stopped_at < 15  # 40 paths at 0.1 s would go on for 4 s
        # the server still answers the next client (the decoder is free again)
        answer = client(url).chat.completions.create(model="m", messages=ask("I am sure"), n=2)
        assert answer.self_consistency["answer"] == "18"
    engine.close()


@pytest.mark.model
def test_server_on_the_embedded_model(loaded_model):
    question = json.loads(GSM8K_TEST.read_text().splitlines()[0])["question"]
    engine = SelfConsistency(model=SMALL_MODEL, paths=3, temperature=0.7, max_tokens=40, batch_size=3)
    with serving(create_app(engine, api_key=API_KEY, max_concurrent=2)) as url:
        chat = client(url, timeout=900).chat.completions  # a shared 2-core machine: slow, not stuck
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(lambda n: chat.create(model="m", messages=ask(question), seed=n), range(2)))
        with pytest.raises(openai.AuthenticationError):
            client(url, key="nope").chat.completions.create(model="m", messages=ask(question))
    engine.close()
    for response in responses:
        sc = response.self_consistency
        answers = [p["answer"] for p in sc["paths"]]
        assert sc["paths_used"] == 3 and sc["votes"] == dict(Counter(a for a in answers if a is not None))
        assert response.usage.completion_tokens == sum(p["completion_tokens"] for p in sc["paths"])
        assert response.usage.prompt_tokens > 0
        if sc["answer"] is not None:  # the content is a path that gave the answer (perhaps cut at max_tokens)
            assert sc["answer"] in response.choices[0].message.content


# -- what one request may ask for ---------------------------------------------------------------


def test_one_request_cannot_order_unbounded_work(fake_server):
    """Paths over all prompts, max_tokens and the question's length have ceilings, each named in a 400."""
    url, bots = fake_server  # the server's defaults: 5 paths, max_tokens 256, questions of 8,000 characters
    api = client(url)
    for make, limit, param in [
        (lambda: api.completions.create(model="m", prompt=[f"I am sure {i}" for i in range(52)]), "256 paths",
         "prompt"),  # 52 prompts x 5 paths
        (lambda: api.chat.completions.create(model="m", messages=ask("I am sure"), n=257), "256 paths", "n"),
        (lambda: api.chat.completions.create(model="m", messages=ask("I am sure"), max_tokens=257), "256 tokens",
         "max_tokens"),
        (lambda: api.chat.completions.create(model="m", messages=ask("I am sure " + "x" * 8000)),
         "8000 characters", "messages"),
        (lambda: api.completions.create(model="m", prompt=["I am sure", "y" * 8001]), "8000 characters", "prompt"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            make()
        assert limit in refused.value.message and refused.value.body["param"] == param
    assert not bots or not bots[0].calls  # nothing was sampled
    within = api.completions.create(model="m", prompt=["I am sure", "coin toss"], n=128, max_tokens=256)
    assert [sc["paths_used"] for sc in within.self_consistency] == [128, 128]


def raw_exchange(url, head: bytes, body_chunks=(), timeout=5.0) -> tuple[int, dict]:
    """One HTTP request written by hand on a socket (a head, then body chunks as given, never finished),
    and the status and JSON of the response the server sends without waiting for the rest."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            sock.sendall(chunk)
        received = b""
        while data := sock.recv(65536):  # the server answers and closes, or keeps the connection open
            received += data
            head_part, _, body_part = received.partition(b"\r\n\r\n")
            length = [line for line in head_part.lower().split(b"\r\n") if line.startswith(b"content-length:")]
            if length and len(body_part) >= int(length[0].split(b":")[1]):
                break
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def head(length: str, key: str | None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    framing = f"Content-Length: {length}" if length != "chunked" else "Transfer-Encoding: chunked"
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            f"{framing}\r\n\r\n").encode()


def test_the_key_is_checked_before_the_body_is_read(fake_server):
    url, _ = fake_server
    # a 200 MB body announced without a key (or a wrong one): refused at once, before any of it is sent
    for key in (None, "wrong-key"):
        status, error = raw_exchange(url, head("200000000", key))
        assert status == 401 and error["error"]["code"] == "invalid_api_key"


def test_big_bodies_are_refused_as_they_come_in():
    made = register()
    engine = SelfConsistency(model="fake-model", backend=FAKE_BACKEND, paths=5)
    with serving(create_app(engine, api_key=API_KEY, max_body_bytes=50_000)) as url:
        status, error = raw_exchange(url, head("200000000", API_KEY))  # with the key: too large by its length
        assert status == 413 and "50000 bytes" in error["error"]["message"]
        # chunked, no length: refused once 50 KB have come in, while the client is still sending
        chunk = b"%x\r\n%s\r\n" % (20_000, b" " * 20_000)
        status, error = raw_exchange(url, head("chunked", API_KEY), [b'e\r\n{"messages": [\r\n', chunk, chunk, chunk])
        assert status == 413 and error["error"]["type"] == "invalid_request_error"
        small = client(url).chat.completions.create(model="m", messages=ask("I am sure"), user="u" * 40_000)
        assert small.self_consistency["answer"] == "18"
    engine.close()
    assert len(made[0].calls) == 5


@pytest.mark.parametrize("content,refused", [
    ([{"type": "text", "text": 5}], '"text": 5'),
    ([{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}, {"type": "text", "text": "What is it?"}],
     "image_url"),
    ([{"text": "no type"}], "no type"),
])
def test_content_parts_are_text_parts(fake_server, content, refused):
    url, bots = fake_server
    status, error = post(url + "/chat/completions", json.dumps({"messages": [
        {"role": "user", "content": content}]}).encode())
    assert status == 400 and error["error"]["param"] == "messages.0.content" and refused in error["error"]["message"]
    answered = client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": [
        {"type": "text", "text": "I am"}, {"type": "text", "text": "sure"}]}])
    assert answered.self_consistency["answer"] == "18"


def test_an_unexpected_failure_is_an_openai_500_without_internals(tmp_path):
    crashing = failing_backend("crashing", RuntimeError("secret internals at /srv/models"))
    engine = SelfConsistency(model="m", backend=crashing, paths=2)
    with serving(create_app(engine)) as url:
        with pytest.raises(openai.InternalServerError) as failed:
            client(url).chat.completions.create(model="m", messages=ask("q"))
    assert failed.value.status_code == 500 and failed.value.body["type"] == "server_error"
    assert "secret" not in failed.value.message and "Traceback" not in str(failed.value.body)


def test_a_run_dir_server_takes_seed_and_max_tokens_overrides(tmp_path):
    """Paths of other settings go to a subdirectory of their own; the server's own stay reusable."""
    made = register()
    run_dir = tmp_path / "served-runs"
    engine = SelfConsistency(model="fake-model", backend=FAKE_BACKEND, paths=3, run_dir=run_dir)
    with serving(create_app(engine)) as url:
        chat = client(url).chat.completions
        plain = chat.create(model="m", messages=ask("a coin toss")).self_consistency
        seeded = chat.create(model="m", messages=ask("a coin toss"), seed=11, max_tokens=100).self_consistency
        assert seeded["paths_used"] == 3 and len(made[0].calls) == 6
        assert chat.create(model="m", messages=ask("a coin toss")).self_consistency == plain  # reused
        assert chat.create(model="m", messages=ask("a coin toss"), seed=11, max_tokens=100
                           ).self_consistency == seeded
        assert len(made[0].calls) == 6
        assert (run_dir / "samples.sqlite").exists() and len(list(run_dir.glob("settings-*"))) == 1
    engine.close()


def test_a_run_dir_that_is_no_directory_stops_the_server_at_start(tmp_path):
    """It would fail every request; the operator is told at start, in one line (the command's exit 2)."""
    from selfconsistency.serve import ServeError

    register()
    taken = tmp_path / "not-a-directory"
    taken.write_text("a file")
    engine = SelfConsistency(model="fake-model", backend=FAKE_BACKEND, paths=2, run_dir=taken)
    with pytest.raises(ServeError, match="is a file, not a directory"):
        create_app(engine)
    others = tmp_path / "someone's folder"
    others.mkdir()
    (others / "notes.txt").write_text("mine")
    with pytest.raises(ServeError, match="not a run directory"):
        create_app(engine.with_options(run_dir=others))
    assert sorted(p.name for p in others.iterdir()) == ["notes.txt"]
    engine.close()


def test_a_run_dir_server_keeps_a_bounded_number_of_settings_stores(tmp_path):
    """Each new seed changes the paths' text, so it gets a store of its own; past MAX_SETTINGS_STORES the
    requests are answered all the same, in a temporary directory, and nothing more is kept."""
    from starlette.testclient import TestClient

    from selfconsistency.serve import MAX_SETTINGS_STORES

    register()
    engine = SelfConsistency(model="fake-model", backend=FAKE_BACKEND, paths=2, run_dir=tmp_path / "run")
    with TestClient(create_app(engine)) as http:
        for seed in range(MAX_SETTINGS_STORES + 5):
            reply = http.post("/v1/chat/completions", json={"model": "m", "messages": ask("I am sure"), "seed": seed})
            assert reply.status_code == 200 and reply.json()["self_consistency"]["answer"] == "18"
    assert len(list((tmp_path / "run").glob("settings-*"))) == MAX_SETTINGS_STORES
    engine.close()


def test_top_p_and_top_k_reach_the_upstream(stub_server):
    from conftest import OpenAIStub

    engine = SelfConsistency(model="upstream-model", backend="openai", base_url=stub_server, paths=2,
                             prompt_format="chat")
    with serving(create_app(engine)) as url:
        client(url).chat.completions.create(model="m", messages=ask("What is 5?"), top_p=0.5,
                                            extra_body={"top_k": 7})
        sent = OpenAIStub.calls[-1]["body"]
        assert sent["top_p"] == 0.5 and sent["top_k"] == 7
        with pytest.raises(openai.BadRequestError) as refused:
            client(url).chat.completions.create(model="m", messages=ask("What is 5?"), top_p=0)
        assert refused.value.body["param"] == "top_p"
    engine.close()


@pytest.mark.parametrize("body,param,message", [
    (b'{"messages": [', None, "the body is not valid JSON"),
    (b'{"messages": [{"role": "user", "content": "I am sure"}], "stream": "yes"}', "stream", "boolean"),
    (b'{"messages": [{"role": "user", "content": "I am sure"}], "n": true}', "n", "integer"),
    (b'{"messages": [{"role": "user", "content": "I am sure"}], "max_tokens": "9"}', "max_tokens", "integer"),
    (b'{"messages": [{"role": "user", "content": "I am sure"}], "temperature": "0.7"}', "temperature", "number"),
    (b'{"messages": [{"role": "user", "content": "I am sure"}], "stop": ["\\n"]}', "stop", "not supported"),
    (b'{"messages": [{"role": "user", "content": "I am sure"}], "presence_penalty": 1.5}', "presence_penalty",
     "not supported"),
])
def test_bodies_are_read_strictly(fake_server, body, param, message):
    url, _ = fake_server
    status, error = post(url + "/chat/completions", body)
    assert status == 400 and error["error"]["param"] == param and message in error["error"]["message"]
    # what a client sends to ask for nothing is accepted
    defaults = {"stop": None, "presence_penalty": 0, "logprobs": False, "user": "u1"}
    answered = client(url).chat.completions.create(model="m", messages=ask("I am sure"), **defaults)
    assert answered.self_consistency["answer"] == "18"


# -- the commands -------------------------------------------------------------------------------


@contextmanager
def serve_command(*args: str, startup_seconds: float = 60):
    """`selfconsistency serve ARGS` as a user starts it, once /health answers; yields a dict whose "url"
    is the server's root URL and, once it has stopped, whose "log" is its output."""
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-m", "selfconsistency", "serve", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = args[args.index("--port") + 1]
    running = {"url": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.time() + startup_seconds
        while time.time() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen(running["url"] + "/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield running
    finally:
        server.terminate()
        running["log"], _ = server.communicate(timeout=30)


def test_answer_command_over_an_upstream(tmp_path, stub_server):
    from conftest import run_cli

    data = tmp_path / "questions.jsonl"
    data.write_text(json.dumps({"question": "What is 5 and a bit?"}) + "\n"
                    + json.dumps({"question": "Labelled", "answer": "#### 6"}) + "\n")
    out = tmp_path / "answers.jsonl"
    proc = run_cli("answer", "gsm8k", "--data", str(data), "--backend", "openai", "--base-url", stub_server,
                   "--model", "m", "--paths", "2", "--prompt-format", "chat", "--min-agreement", "0.9",
                   "--run-dir", str(tmp_path / "run"), "-o", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["id"] == "test-00000" and first["votes"] == {"5": 1, "6": 1} and "gold" not in first
    assert first["low_confidence"] is True and first["answer"] in {"5", "6"}
    assert second["gold"] == "6" and second["correct"] == (second["answer"] == "6")
    refused = run_cli("answer", "gsm8k", "--data", str(data), "--weighted", "logprob", "--usc")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "give one" in refused.stderr


@pytest.mark.slow  # `selfconsistency serve` as a process: its log, its port
def test_serve_command_over_an_upstream(stub_server):
    with serve_command("--backend", "openai", "--base-url", stub_server, "--model", "m", "--paths", "3",
                       "--prompt-format", "chat", "--port", str(free_port()), "--api-key", API_KEY) as server:
        url = server["url"]
        response = client(url + "/v1").chat.completions.create(model="m", messages=ask("What is 5 and a bit?"))
        assert response.self_consistency["votes"] == {"5": 1, "6": 1, "7": 1}
        with pytest.raises(openai.AuthenticationError):
            client(url + "/v1", key="wrong").models.list()
    assert "POST /v1/chat/completions" in server["log"] and API_KEY not in server["log"]


@pytest.mark.model
def test_serve_command_over_llama_cpp_server(llama_server):
    """`selfconsistency serve` with llama-cpp-python's own server as the upstream, driven by the openai
    client: each path is an upstream completion, the vote and the usage are over them. Zero-shot prompts
    and short paths keep it to about a minute on two cores."""
    question = json.loads(GSM8K_TEST.read_text().splitlines()[0])["question"]
    with serve_command("--backend", "openai", "--base-url", llama_server, "--model", "qwen-0.5b", "--paths", "3",
                       "--zero-shot", "--prompt-format", "chat", "--max-tokens", "48", "--max-concurrent", "3",
                       "--port", str(free_port()), "--api-key", API_KEY) as server:
        url = server["url"] + "/v1"
        chat = client(url, timeout=600).chat.completions
        with ThreadPoolExecutor(3) as pool:  # concurrent requests, each with its own seed
            responses = list(pool.map(lambda seed: chat.create(model="m", messages=ask(question), seed=seed),
                                      range(3)))
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong").chat.completions.create(model="m", messages=ask(question))
        status, error = post(url + "/chat/completions", b'{"model": "m", "messages": [{"role": "user"}]}')
        assert status == 400 and error["error"]["param"] == "messages"  # a question without text
        status, error = post(url + "/chat/completions", b'{"model": "m", "messages": [')
        assert status == 400 and error["error"]["type"] == "invalid_request_error"
    for response in responses:
        sc = response.self_consistency
        answers = [p["answer"] for p in sc["paths"]]
        assert sc["paths_used"] == 3 and len(answers) == 3
        assert sc["votes"] == dict(Counter(a for a in answers if a is not None))
        assert sc["abstained"] == answers.count(None)
        if sc["answer"] is not None:
            assert sc["votes"][sc["answer"]] == max(sc["votes"].values())
            assert sc["answer"] in response.choices[0].message.content
        # usage adds up over the paths: every path's completion tokens, and the upstream's prompt tokens
        assert response.usage.completion_tokens == sum(p["completion_tokens"] for p in sc["paths"]) > 0
        assert response.usage.prompt_tokens > 0
        assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert len({r.choices[0].message.content for r in responses}) > 1  # the seeds made different paths
    assert server["log"].count("POST /v1/chat/completions") == 6 and API_KEY not in server["log"]


def test_serve_refuses_an_empty_key_and_a_port_in_use(stub_server):
    from conftest import run_cli

    upstream = ("--backend", "openai", "--base-url", stub_server, "--model", "m")
    refused = run_cli("serve", *upstream, "--port", str(free_port()), "--api-key", "")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "API key is empty" in refused.stderr
    refused = run_cli("serve", *upstream, "--port", str(free_port()), "--api-key", "   ")
    assert refused.returncode == 2 and "API key is empty" in refused.stderr  # no bearer token could match it
    refused = run_cli("serve", *upstream, "--port", str(free_port()), "--max-tokens-limit", "100")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "below the server's own" in refused.stderr
    # set but empty: not "no key"
    refused = run_cli("serve", *upstream, "--port", str(free_port()), env={"SELFCONSISTENCY_API_KEY": ""})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "API key is empty" in refused.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("serve", *upstream, "--port", str(port), "--api-key", API_KEY)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in \
        busy.stderr and "Traceback" not in busy.stdout + busy.stderr


@pytest.mark.slow  # the served process's own log
def test_serve_warns_when_it_listens_beyond_loopback_without_a_key(stub_server):
    with serve_command("--backend", "openai", "--base-url", stub_server, "--model", "m", "--host", "0.0.0.0",
                       "--port", str(free_port())) as server:
        with urllib.request.urlopen(server["url"] + "/health", timeout=10) as health:
            assert health.status == 200
    assert "warning: serving on 0.0.0.0 without an API key" in server["log"]
