"""Switchyard through the official `openai` Python SDK.

What an application sees when it points ``OpenAI(base_url=<switchyard>/v1)`` at the gateway:
chat completions (JSON and SSE), model listing, errors mapped to the SDK's exception types, the
async client, and credentials that come from the manifests rather than from the caller.
"""

from __future__ import annotations

import asyncio
import urllib.request

import openai
import pytest

from conftest import MOCK_MODEL, REQUEST_TIMEOUT, ROUTES, UPSTREAM_KEY, UPSTREAM_MODEL

PROMPT = "Say hello to the conformance suite"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": PROMPT},
]
#: The fake's words-based usage: prompt tokens are the words of all messages.
PROMPT_WORDS = sum(len(m["content"].split()) for m in MESSAGES)


def fake_answer(model: str) -> str:
    """What the OpenAI fake (started with ``--name conformance``) answers for ``model``."""
    return f"hello from {model} via conformance: this is a fake completion"


def assert_usage(usage, *, prompt_tokens=None, completion_tokens=None) -> None:
    assert usage is not None, "usage is missing"
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if prompt_tokens is not None:
        assert usage.prompt_tokens == prompt_tokens
    if completion_tokens is not None:
        assert usage.completion_tokens == completion_tokens


def collect(chunks) -> dict:
    """Reassembles streamed chunks the way an application does."""
    chunks = list(chunks)
    assert chunks, "the stream had no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    roles = {c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role}
    return {"chunks": chunks, "text": text, "finish": finish, "roles": roles}


def assert_well_formed_stream(result: dict, model_hint: str) -> None:
    chunks = result["chunks"]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1, "every chunk of one completion carries the same id"
    assert result["roles"] == {"assistant"}
    assert result["finish"] == ["stop"], "exactly one chunk carries the finish_reason"
    assert model_hint in result["text"]


# === Non-streaming ===


def test_chat_completion_via_fake_upstream(client):
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers.get("x-switchyard-target") == ROUTES["chat"]
    assert raw.headers.get("x-switchyard-route") == "chat"
    assert raw.headers.get("x-request-id")

    completion = raw.parse()
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == fake_answer(UPSTREAM_MODEL)
    assert choice.finish_reason == "stop"
    assert_usage(
        completion.usage,
        prompt_tokens=PROMPT_WORDS,
        completion_tokens=len(fake_answer(UPSTREAM_MODEL).split()),
    )


def test_chat_completion_via_mock_provider(client):
    raw = client.chat.completions.with_raw_response.create(model="chat-mock", messages=MESSAGES)
    assert raw.headers.get("x-switchyard-target") == ROUTES["chat-mock"]
    assert raw.headers.get("x-switchyard-route") == "chat-mock"

    completion = raw.parse()
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith(f"This is a mock reply from {MOCK_MODEL} to: {PROMPT}")
    assert choice.finish_reason == "stop"
    assert_usage(completion.usage, completion_tokens=len(choice.message.content.split()))


def test_request_id_is_echoed(client):
    raw = client.chat.completions.with_raw_response.create(
        model="chat-mock", messages=MESSAGES, extra_headers={"x-request-id": "conformance-req-42"}
    )
    assert raw.headers.get("x-request-id") == "conformance-req-42"


# === Streaming ===


def test_streaming_via_fake_upstream(client):
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, stream=True)
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    assert raw.headers.get("x-switchyard-target") == ROUTES["chat"]

    result = collect(raw.parse())
    assert_well_formed_stream(result, UPSTREAM_MODEL)
    assert result["text"] == fake_answer(UPSTREAM_MODEL)
    last = result["chunks"][-1]
    assert last.choices and last.choices[0].finish_reason == "stop", "the last chunk carries the finish_reason"
    # No usage was asked for: no usage chunk (whose empty `choices` breaks `chunk.choices[0]` code).
    assert all(c.choices for c in result["chunks"])
    assert all(c.usage is None for c in result["chunks"])


def test_streaming_with_usage_via_fake_upstream(client):
    stream = client.chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    result = collect(stream)
    assert_well_formed_stream(result, UPSTREAM_MODEL)
    assert result["text"] == fake_answer(UPSTREAM_MODEL)

    *body, last = result["chunks"]
    assert last.choices == [], "the usage chunk comes last, with empty choices"
    assert_usage(last.usage, prompt_tokens=PROMPT_WORDS, completion_tokens=len(fake_answer(UPSTREAM_MODEL).split()))
    assert body[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in body)


def test_streaming_via_mock_provider(client):
    raw = client.chat.completions.with_raw_response.create(model="chat-mock", messages=MESSAGES, stream=True)
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    assert raw.headers.get("x-switchyard-target") == ROUTES["chat-mock"]

    result = collect(raw.parse())
    assert_well_formed_stream(result, MOCK_MODEL)
    assert result["text"].startswith(f"This is a mock reply from {MOCK_MODEL} to: {PROMPT}")
    last = result["chunks"][-1]
    assert last.choices and last.choices[0].finish_reason == "stop"
    assert all(c.choices for c in result["chunks"])
    assert all(c.usage is None for c in result["chunks"])


def test_streaming_with_usage_via_mock_provider(client):
    stream = client.chat.completions.create(
        model="chat-mock", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    result = collect(stream)
    assert_well_formed_stream(result, MOCK_MODEL)

    *body, last = result["chunks"]
    assert last.choices == [], "the usage chunk comes last, with empty choices"
    assert_usage(last.usage, completion_tokens=len(result["text"].split()))
    assert body[-1].choices[0].finish_reason == "stop"


def test_stream_and_json_give_the_same_text(client):
    for alias in ("chat", "chat-mock"):
        json_text = client.chat.completions.create(model=alias, messages=MESSAGES).choices[0].message.content
        stream_text = collect(client.chat.completions.create(model=alias, messages=MESSAGES, stream=True))["text"]
        assert stream_text == json_text, alias


# === Models ===


def test_models_list_returns_the_aliases(client, stack):
    models = list(client.models.list())
    assert sorted(m.id for m in models) == stack.aliases
    assert {m.object for m in models} == {"model"}


# === Errors ===


def test_unknown_model_raises_not_found_listing_the_aliases(client, stack):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-alias", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert "no-such-alias" in error.message
    for alias in stack.aliases:
        assert alias in error.message, f"alias `{alias}` missing from: {error.message}"
    assert error.response.headers.get("x-request-id")


def test_unknown_model_streaming_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-alias", messages=MESSAGES, stream=True)
    assert caught.value.code == "model_not_found"


def test_all_targets_failing_raises_bad_gateway(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="broken", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 502, error.message
    assert isinstance(error, openai.InternalServerError)
    assert isinstance(error.body, dict) and error.body.get("message"), "OpenAI's error shape: {'error': {'message': ...}}"
    assert error.response.headers.get("x-request-id")


def test_all_targets_failing_before_the_stream_starts_raises_bad_gateway(client):
    # Nothing reached the client yet, so the failure is an HTTP status, not a broken stream.
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="broken", messages=MESSAGES, stream=True)
    assert caught.value.status_code == 502, caught.value.message


# === Credentials ===


def test_fake_upstream_enforces_its_api_key(stack):
    """Precondition of the next test: the fake really rejects a wrong key and accepts the right one."""
    with openai.OpenAI(base_url=stack.fake_url, api_key="sk-wrong", max_retries=0, timeout=REQUEST_TIMEOUT) as fake:
        with pytest.raises(openai.AuthenticationError):
            fake.chat.completions.create(model=UPSTREAM_MODEL, messages=MESSAGES)
    with openai.OpenAI(base_url=stack.fake_url, api_key=UPSTREAM_KEY, max_retries=0, timeout=REQUEST_TIMEOUT) as fake:
        assert fake.chat.completions.create(model=UPSTREAM_MODEL, messages=MESSAGES).choices[0].message.content


def test_upstream_key_comes_from_the_secret(stack):
    """The caller's key is not forwarded: the key from the Secret is, and the fake accepts it."""
    for caller_key in ("unused", UPSTREAM_KEY + "-not"):
        with openai.OpenAI(base_url=stack.v1, api_key=caller_key, max_retries=0, timeout=REQUEST_TIMEOUT) as sdk:
            completion = sdk.chat.completions.create(model="chat", messages=MESSAGES)
            assert completion.choices[0].message.content == fake_answer(UPSTREAM_MODEL)


def test_wrong_key_in_the_secret_fails(client):
    """Same fake, a Secret with a key it rejects: the call must fail, never succeed."""
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="wrong-key", messages=MESSAGES)
    error = caught.value
    assert error.status_code in (401, 403, 502), error.message
    assert "api key" in error.message.lower() or "401" in error.message, error.message
    assert UPSTREAM_KEY not in error.message and "sk-not-the-right-key" not in error.message, "a key leaked"


# === Async client ===


def test_async_client_streaming(stack):
    async def stream(sdk: openai.AsyncOpenAI, alias: str) -> dict:
        chunks = []
        response = await sdk.chat.completions.create(
            model=alias, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in response:
            chunks.append(chunk)
        return collect(chunks)

    async def main() -> list[dict]:
        async with openai.AsyncOpenAI(
            base_url=stack.v1, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT
        ) as sdk:
            return await asyncio.gather(stream(sdk, "chat"), stream(sdk, "chat-mock"), stream(sdk, "chat"))

    fake_a, mock, fake_b = asyncio.run(main())
    for result, model in ((fake_a, UPSTREAM_MODEL), (mock, MOCK_MODEL), (fake_b, UPSTREAM_MODEL)):
        assert_well_formed_stream(result, model)
        last = result["chunks"][-1]
        assert last.choices == [] and last.usage is not None
        assert_usage(last.usage)
    assert fake_a["text"] == fake_b["text"] == fake_answer(UPSTREAM_MODEL)
    assert mock["text"].startswith(f"This is a mock reply from {MOCK_MODEL} to: {PROMPT}")


def test_async_client_non_streaming(stack):
    async def main():
        async with openai.AsyncOpenAI(
            base_url=stack.v1, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT
        ) as sdk:
            ok = await sdk.chat.completions.create(model="chat", messages=MESSAGES)
            with pytest.raises(openai.NotFoundError):
                await sdk.chat.completions.create(model="no-such-alias", messages=MESSAGES)
            return ok

    completion = asyncio.run(main())
    assert completion.choices[0].message.content == fake_answer(UPSTREAM_MODEL)


# === Secrets stay secret ===


def test_upstream_key_never_shows_in_admin_endpoints_or_logs(client, stack):
    # Make sure the key has been used at least once before looking.
    client.chat.completions.create(model="chat", messages=MESSAGES)
    for path in ("/debug/table", "/metrics"):
        with urllib.request.urlopen(f"{stack.admin_url}{path}", timeout=REQUEST_TIMEOUT) as response:
            assert response.status == 200, path
            body = response.read().decode("utf-8", "replace")
        assert UPSTREAM_KEY not in body, f"the upstream key leaked into {path}"
    assert UPSTREAM_KEY not in stack.proxy.output(last=100_000), "the upstream key leaked into the proxy log"


# === Embeddings ===


def test_embeddings_via_fake_upstream(client):
    raw = client.embeddings.with_raw_response.create(model="chat", input=["first text", "second text"])
    assert raw.status_code == 200
    assert raw.headers.get("x-switchyard-target") == ROUTES["chat"]
    result = raw.parse()
    assert isinstance(result, openai.types.CreateEmbeddingResponse)
    assert [item.index for item in result.data] == [0, 1]
    # The SDK asks for base64 and decodes it: the vectors arrive as floats.
    assert all(len(item.embedding) > 0 and isinstance(item.embedding[0], float) for item in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0


def test_embeddings_of_an_unknown_model_raise_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-alias", input="hello")
