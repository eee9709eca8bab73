"""The official `openai` SDK against every provider target.

Each entry of ``conftest.PROVIDER_TARGETS`` is one alias (``via-PROVIDER``) whose only target is
a ProviderSecret of that ``spec.provider``, pointed at the fake that speaks the provider's wire
format. The same application code (chat, streaming, tool calls, embeddings) must work unchanged
whichever provider serves it: that is what "move to any provider by editing a manifest" means.
"""

from __future__ import annotations

import json

import openai
import pytest

from conftest import PROVIDER_TARGETS, ProviderTarget

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the conformance suite"},
]
#: The fakes count prompt tokens as the words of the system prompt and every message.
PROMPT_WORDS = sum(len(m["content"].split()) for m in MESSAGES)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
#: Every fake answers a weather question that comes with tools by calling the first tool for Oslo.
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Oslo right now?"}]

by_provider = pytest.mark.parametrize("target", PROVIDER_TARGETS, ids=[p.provider for p in PROVIDER_TARGETS])


def collect_stream(chunks) -> dict:
    """Reassembles streamed chunks the way an application does, tool-call deltas included."""
    chunks = list(chunks)
    assert chunks, "the stream had no chunks"
    text = ""
    calls: dict[int, dict] = {}
    finish = []
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                if call.function and call.function.name:
                    slot["name"] += call.function.name
                if call.function and call.function.arguments:
                    slot["arguments"] += call.function.arguments
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert len({c.id for c in chunks}) == 1, "every chunk of one completion carries the same id"
    return {"chunks": chunks, "text": text, "calls": [calls[i] for i in sorted(calls)], "finish": finish}


def assert_counted(usage, target: ProviderTarget, completion_words: int) -> None:
    assert usage is not None, "usage is missing"
    assert usage.prompt_tokens == PROMPT_WORDS
    assert usage.completion_tokens == completion_words
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


# === Chat ===


@by_provider
def test_chat_completion(client, target: ProviderTarget):
    raw = client.chat.completions.with_raw_response.create(model=target.alias, messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers.get("x-switchyard-target") == target.target
    assert raw.headers.get("x-switchyard-route") == target.alias
    completion = raw.parse()
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.object == "chat.completion"
    assert completion.id
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == target.answer()
    assert not choice.message.tool_calls
    assert choice.finish_reason == "stop"
    assert_counted(completion.usage, target, len(target.answer().split()))


@by_provider
def test_streaming(client, target: ProviderTarget):
    raw = client.chat.completions.with_raw_response.create(model=target.alias, messages=MESSAGES, stream=True)
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    assert raw.headers.get("x-switchyard-target") == target.target
    result = collect_stream(raw.parse())
    assert result["text"] == target.answer()
    assert result["finish"] == ["stop"], "exactly one chunk carries the finish_reason"
    assert result["chunks"][0].choices[0].delta.role == "assistant"
    # No usage was asked for: no usage chunk, whose empty `choices` would break `chunk.choices[0]`.
    assert all(c.choices for c in result["chunks"])
    assert all(c.usage is None for c in result["chunks"])


@by_provider
def test_streaming_with_usage(client, target: ProviderTarget):
    stream = client.chat.completions.create(
        model=target.alias, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    result = collect_stream(stream)
    assert result["text"] == target.answer()
    *body, last = result["chunks"]
    assert last.choices == [], "the usage chunk comes last, with empty choices"
    assert last.usage is not None and last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    assert body[-1].choices[0].finish_reason == "stop"


@by_provider
def test_stream_and_json_agree(client, target: ProviderTarget):
    json_text = client.chat.completions.create(model=target.alias, messages=MESSAGES).choices[0].message.content
    stream_text = collect_stream(client.chat.completions.create(model=target.alias, messages=MESSAGES, stream=True))
    assert stream_text["text"] == json_text


@by_provider
def test_async_client(stack, target: ProviderTarget):
    import asyncio

    async def main():
        async with openai.AsyncOpenAI(base_url=stack.v1, api_key="unused", max_retries=0, timeout=15) as sdk:
            completion = await sdk.chat.completions.create(model=target.alias, messages=MESSAGES)
            stream = await sdk.chat.completions.create(model=target.alias, messages=MESSAGES, stream=True)
            chunks = [chunk async for chunk in stream]
            return completion, chunks

    completion, chunks = asyncio.run(main())
    assert completion.choices[0].message.content == target.answer()
    assert collect_stream(chunks)["text"] == target.answer()


# === Tool calls ===


def follow_up(call_id: str, name: str, arguments: str) -> list[dict]:
    """The conversation after the tool ran: the assistant's call and the tool's result."""
    return WEATHER_QUESTION + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"city": "Oslo", "sky": "snow"})},
    ]


@by_provider
def test_tool_call_round_trip(client, target: ProviderTarget):
    if not target.tools:
        pytest.skip(f"the {target.fake} fake makes no tool calls")
    completion = client.chat.completions.create(model=target.alias, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1, choice.message
    call = calls[0]
    assert call.type == "function"
    assert call.id, "every tool call has an id the application can answer to"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}

    # The application runs the tool and sends the result back under the call's id.
    answer = client.chat.completions.create(
        model=target.alias,
        messages=follow_up(call.id, call.function.name, call.function.arguments),
        tools=[WEATHER_TOOL],
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == target.answer()
    assert not answer.choices[0].message.tool_calls


@by_provider
def test_streamed_tool_call(client, target: ProviderTarget):
    if not target.tools:
        pytest.skip(f"the {target.fake} fake makes no tool calls")
    stream = client.chat.completions.create(
        model=target.alias, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], stream=True
    )
    result = collect_stream(stream)
    assert result["finish"] == ["tool_calls"]
    assert len(result["calls"]) == 1, result["calls"]
    call = result["calls"][0]
    assert call["id"], "the first delta of a call carries its id"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Oslo"}

    followed = collect_stream(
        client.chat.completions.create(
            model=target.alias,
            messages=follow_up(call["id"], call["name"], call["arguments"]),
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    assert followed["finish"] == ["stop"]
    assert followed["text"] == target.answer()


# === Tokens and cost ===


@by_provider
def test_cost_header_and_access_log(client, stack, target: ProviderTarget):
    request_id = f"cost-{target.provider}"
    raw = client.chat.completions.with_raw_response.create(
        model=target.alias, messages=MESSAGES, extra_headers={"x-request-id": request_id}
    )
    usage = raw.parse().usage
    log = stack.access_log(request_id)
    assert (log["tokens_in"], log["tokens_out"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert log["tokens_estimated"] is False, "the provider reported usage"
    header = raw.headers.get("x-switchyard-cost-usd")
    if target.priced:
        assert header is not None and float(header) > 0, header
        assert log["price_source"] == "built-in"
        assert abs(log["cost_usd"] - float(header)) < 1e-12, (log, header)
    else:
        assert header is None, "no built-in price: no made-up cost"
        assert log["price_source"] == "none" and "cost_usd" not in log, log


@by_provider
def test_a_stream_without_provider_usage_is_estimated(client, stack, target: ProviderTarget):
    request_id = f"stream-usage-{target.provider}"
    stream = client.chat.completions.create(
        model=target.alias,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": request_id},
    )
    usage = collect_stream(stream)["chunks"][-1].usage
    log = stack.access_log(request_id)
    assert log["tokens_estimated"] is (not target.stream_usage), log
    assert (log["tokens_in"], log["tokens_out"]) == (usage.prompt_tokens, usage.completion_tokens)
    if target.stream_usage:
        assert usage.prompt_tokens == PROMPT_WORDS, "the fake's own count came through"
    else:
        # The proxy's BPE count: more than the words (framing tokens), of the same order.
        assert PROMPT_WORDS < usage.prompt_tokens < 3 * PROMPT_WORDS, usage


# === Embeddings ===


@by_provider
def test_embeddings(client, target: ProviderTarget):
    if not target.embeds:
        # No embeddings through this provider (yet): a clear client error, never a crash or a hang.
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model=target.alias, input=["first text", "second text"])
        assert "embed" in caught.value.message.lower(), caught.value.message
        return
    raw = client.embeddings.with_raw_response.create(model=target.alias, input=["first text", "second text"])
    assert raw.status_code == 200
    assert raw.headers.get("x-switchyard-target") == target.target
    result = raw.parse()
    assert isinstance(result, openai.types.CreateEmbeddingResponse)
    assert [item.index for item in result.data] == [0, 1]
    # The SDK asks for base64 and decodes it: the vectors arrive as floats.
    assert all(len(item.embedding) > 0 and isinstance(item.embedding[0], float) for item in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == 4
