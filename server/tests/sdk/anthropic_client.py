"""The official `anthropic` package against Tollgate's /v1/messages.

Run by server/tests/protocols.rs with TG_URL, KEY_A, KEY_DENIED, KEY_BROKE,
KEY_BLOCKED, KEY_GRAY (a key whose owner has not consented to GRAY_MODEL)
and MODELS set. Exits non-zero, with the reason, on the first failure.
"""
import os
import anthropic

URL = os.environ["TG_URL"]
a = anthropic.Anthropic(base_url=URL, api_key=os.environ["KEY_A"], max_retries=0)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def expect(exc_type, fn, status, error_type, code):
    try:
        fn()
    except exc_type as e:
        assert e.status_code == status, (e.status_code, e.body)
        assert e.body["type"] == "error", e.body
        assert e.body["error"]["type"] == error_type, e.body
        assert e.body["error"]["code"] == code, e.body
        return
    raise AssertionError(f"expected {exc_type.__name__}")


def plain_and_stream(model):
    m = a.messages.create(model=model, max_tokens=100, system="Be brief.",
                          messages=[{"role": "user", "content": "Hello"}])
    assert m.type == "message" and m.role == "assistant" and m.model == model, m
    assert m.content[0].type == "text" and m.content[0].text, m.content
    assert m.stop_reason == "end_turn", m
    assert m.usage.output_tokens > 0, m.usage

    with a.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "Stream"}]) as s:
        text = s.get_final_text()
        final = s.get_final_message()
    assert text, text
    assert final.usage.output_tokens > 0 and final.stop_reason == "end_turn", final

    events = list(a.messages.create(model=model, max_tokens=100, stream=True,
                                    messages=[{"role": "user", "content": "Raw"}]))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    assert "content_block_delta" in types and "message_delta" in types, types

    n = a.messages.count_tokens(model=model, messages=[{"role": "user", "content": "Count me"}])
    assert n.input_tokens > 0, n


def tool_round_trip(model):
    m = a.messages.create(model=model, max_tokens=200, tools=[WEATHER],
                          messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert m.stop_reason == "tool_use", m
    use = [c for c in m.content if c.type == "tool_use"][0]
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str), use
    m2 = a.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [c.model_dump() for c in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ])
    assert m2.stop_reason == "end_turn" and m2.content[0].text, m2

    with a.messages.stream(model=model, max_tokens=200, tools=[WEATHER],
                           messages=[{"role": "user", "content": "Weather?"}]) as s:
        final = s.get_final_message()
    use = [c for c in final.content if c.type == "tool_use"][0]
    assert isinstance(use.input.get("city"), str) and final.stop_reason == "tool_use", final


def refusals(model):
    def client(key):
        return anthropic.Anthropic(base_url=URL, api_key=os.environ.get(key, "tg-not-a-key"), max_retries=0)
    call = lambda c, mdl=model: c.messages.create(model=mdl, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    expect(anthropic.PermissionDeniedError, lambda: call(client("KEY_DENIED")), 403, "permission_error", "model_not_allowed")
    expect(anthropic.APIStatusError, lambda: call(client("KEY_BROKE")), 402, "billing_error", "insufficient_coins")
    expect(anthropic.PermissionDeniedError, lambda: call(client("KEY_BLOCKED")), 403, "permission_error", "pool_blocked")
    expect(anthropic.AuthenticationError, lambda: call(client("BAD")), 401, "authentication_error", "invalid_api_key")
    expect(anthropic.PermissionDeniedError, lambda: call(client("KEY_GRAY"), os.environ["GRAY_MODEL"]), 403, "permission_error", "consent_required")
    expect(anthropic.BadRequestError, lambda: a.messages.create(model=model, max_tokens=10, tools=[{"type": "web_search_20250305", "name": "web_search"}],
                                                               messages=[{"role": "user", "content": "hi"}]), 400, "invalid_request_error", "invalid_request")


for m in os.environ["MODELS"].split(","):
    plain_and_stream(m)
    if m != "dummy":  # the dummy model never calls tools
        tool_round_trip(m)
    refusals(m)
    print(f"anthropic sdk: {m} ok")
