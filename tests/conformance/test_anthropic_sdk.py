"""Switchyard through the official `anthropic` Python SDK.

What an application written against the Anthropic API sees when it points
``Anthropic(base_url=<switchyard>)`` at the gateway and names an alias as the model: messages
(JSON and streamed), tool use and errors on ``POST /v1/messages``, with the alias routed to every
provider target of ``conftest.PROVIDER_TARGETS`` (OpenAI-, Anthropic- and Gemini-shaped fakes,
each requiring its own key, which the proxy only gets from the manifests).
"""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from conftest import PROVIDER_TARGETS, REQUEST_TIMEOUT, ProviderTarget

by_provider = pytest.mark.parametrize("target", PROVIDER_TARGETS, ids=[p.provider for p in PROVIDER_TARGETS])

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
#: Every fake answers a weather question that comes with tools by calling the first tool for Oslo.
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Oslo?"}]


@pytest.fixture
def client(stack):
    """The official SDK pointed at the proxy; its own key never reaches an upstream."""
    with anthropic.Anthropic(
        base_url=stack.base_url, api_key="sk-ant-client-unused", max_retries=0, timeout=REQUEST_TIMEOUT
    ) as sdk:
        yield sdk


# === messages ===


@by_provider
def test_messages_create(client, target: ProviderTarget):
    raw = client.messages.with_raw_response.create(
        model=target.alias,
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello to the conformance suite"}],
    )
    assert raw.headers["x-switchyard-target"] == target.target
    assert raw.headers["x-request-id"]
    message = raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == target.answer()
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


@by_provider
def test_max_tokens_cuts_the_answer(client, target: ProviderTarget):
    message = client.messages.create(
        model=target.alias, max_tokens=2, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.stop_reason == "max_tokens"
    assert len(message.content[0].text.split()) == 2


@by_provider
def test_streaming(client, target: ProviderTarget):
    with client.messages.stream(
        model=target.alias,
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello to the conformance suite"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == target.answer()
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0, "message_delta carries the input count"


@by_provider
def test_streaming_event_order(client, target: ProviderTarget):
    events = list(
        client.messages.create(
            model=target.alias, max_tokens=256, stream=True,
            messages=[{"role": "user", "content": "Say hello"}],
        )
    )
    types = [event.type for event in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    blocks = [t for t in types if t.startswith("content_block")]
    assert blocks[0] == "content_block_start" and blocks[-1] == "content_block_stop"
    assert set(blocks[1:-1]) == {"content_block_delta"}


# === tool use ===


@by_provider
def test_tool_use_round_trip(client, target: ProviderTarget):
    message = client.messages.create(
        model=target.alias, max_tokens=256, tools=[WEATHER_TOOL], messages=WEATHER_QUESTION
    )
    assert message.stop_reason == "tool_use"
    calls = [block for block in message.content if block.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.input == {"city": "Oslo"}
    assert call.id

    follow_up = client.messages.create(
        model=target.alias,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=WEATHER_QUESTION
        + [
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3C, snow"}]},
        ],
    )
    assert follow_up.stop_reason == "end_turn"
    assert [block.type for block in follow_up.content] == ["text"]


@by_provider
def test_streamed_tool_use(client, target: ProviderTarget):
    with client.messages.stream(
        model=target.alias, max_tokens=256, tools=[WEATHER_TOOL], messages=WEATHER_QUESTION
    ) as stream:
        json_fragments = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = next(block for block in final.content if block.type == "tool_use")
    assert call.name == "get_weather"
    assert call.input == {"city": "Oslo"}
    assert json_fragments, "the input arrived as input_json_delta fragments"


# === errors and the async client ===


def test_unknown_alias_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-alias", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    body = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "via-openai" in body["error"]["message"], "the message lists the aliases"


def test_a_failing_upstream_is_an_api_error(client):
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="broken", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"
    assert caught.value.response.headers["x-switchyard-target"] == "failing"


def test_a_request_the_proxy_cannot_route_names_the_field(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="via-openai", max_tokens=16,
            messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AAAA"}}]}],
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].source.media_type" in caught.value.body["error"]["message"]


@by_provider
def test_async_client_streams(stack, target: ProviderTarget):
    async def run() -> str:
        async with anthropic.AsyncAnthropic(
            base_url=stack.base_url, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT
        ) as sdk:
            async with sdk.messages.stream(
                model=target.alias, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                return "".join([text async for text in stream.text_stream])

    assert asyncio.run(run()) == target.answer()
