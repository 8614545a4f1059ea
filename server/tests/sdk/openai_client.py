"""The official `openai` package against Tollgate's /v1/responses.

Run by server/tests/protocols.rs with TG_URL, KEY_A, KEY_B (another owner),
KEY_DENIED, KEY_BROKE, KEY_BLOCKED and MODELS (comma-separated) set. Exits
non-zero, with the reason, on the first check that fails.
"""
import os
import openai

BASE = os.environ["TG_URL"] + "/v1"
a = openai.OpenAI(base_url=BASE, api_key=os.environ["KEY_A"], max_retries=0)
b = openai.OpenAI(base_url=BASE, api_key=os.environ["KEY_B"], max_retries=0)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def expect(exc_type, fn, status=None, code=None):
    try:
        fn()
    except exc_type as e:
        if status is not None:
            assert e.status_code == status, (e.status_code, e.body)
        if code is not None:
            assert e.body["code"] == code, e.body
        return e
    raise AssertionError(f"expected {exc_type.__name__}")


def plain_and_stream(model):
    r = a.responses.create(model=model, input="Say hello", instructions="Be brief.", max_output_tokens=50)
    assert r.status == "completed", r
    # a chat upstream gets the instructions as a system message; a native
    # one gets them as `instructions` beside the one input item
    want = "seen 1 " if model == "native" else "seen 2 "
    assert r.output_text.startswith(want), r.output_text
    assert r.usage.input_tokens == 20 and r.usage.input_tokens_details.cached_tokens == 8, r.usage
    assert r.usage.output_tokens_details.reasoning_tokens == 2, r.usage
    assert r.model == model and r.id.startswith("resp_"), r

    events = list(a.responses.create(model=model, input="Stream please", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("seen 1 "), text
    done = events[-1].response
    assert done.usage.output_tokens == 6 and done.output_text == text, done
    assert a.responses.retrieve(done.id).output_text == text, "a streamed response is stored too"
    return r


def chain_and_isolation(model, first):
    r2 = a.responses.create(model=model, input="And again", previous_response_id=first.id)
    # history: the first input and its answer, then the new input
    assert r2.output_text.startswith("seen 3 "), r2.output_text
    assert r2.previous_response_id == first.id, r2
    assert a.responses.retrieve(r2.id).id == r2.id

    expect(openai.NotFoundError, lambda: b.responses.retrieve(r2.id), 404, "response_not_found")
    expect(openai.NotFoundError, lambda: b.responses.create(model=model, input="x", previous_response_id=r2.id), 404)
    expect(openai.NotFoundError, lambda: b.responses.delete(r2.id), 404)
    assert a.responses.retrieve(r2.id).id == r2.id, "another owner's delete removed nothing"

    a.responses.delete(r2.id)
    expect(openai.NotFoundError, lambda: a.responses.retrieve(r2.id), 404)

    unstored = a.responses.create(model=model, input="Forget me", store=False)
    expect(openai.NotFoundError, lambda: a.responses.retrieve(unstored.id), 404)


def tool_round_trip(model):
    r = a.responses.create(model=model, input="Weather in Oslo?", tools=[WEATHER])
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather", r.output
    assert '"Oslo"' in calls[0].arguments
    r2 = a.responses.create(
        model=model,
        previous_response_id=r.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
    )
    assert r2.output_text.startswith("seen "), r2.output


def refusals(model):
    gray = openai.OpenAI(base_url=BASE, api_key=os.environ["KEY_GRAY"], max_retries=0)
    expect(openai.PermissionDeniedError, lambda: gray.responses.create(model=os.environ["GRAY_MODEL"], input="hi"), 403, "consent_required")
    for key, status, code in [
        ("KEY_DENIED", 403, "model_not_allowed"),
        ("KEY_BROKE", 402, "insufficient_coins"),
        ("KEY_BLOCKED", 403, "pool_blocked"),
        ("BAD", 401, "invalid_api_key"),
    ]:
        c = openai.OpenAI(base_url=BASE, api_key=os.environ.get(key, "tg-not-a-key"), max_retries=0)
        expect(openai.APIStatusError, lambda: c.responses.create(model=model, input="hi"), status, code)
    e = expect(openai.BadRequestError, lambda: a.responses.create(model=model, input="hi", tools=[{"type": "web_search"}]), 400)
    assert "tools[0].type" in e.body["message"], e.body


for m in os.environ["MODELS"].split(","):
    first = plain_and_stream(m)
    chain_and_isolation(m, first)
    tool_round_trip(m)
    refusals(m)
    print(f"openai sdk: {m} ok")
