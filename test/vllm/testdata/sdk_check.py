"""Calls a cold thaw deployment served by real vLLM with the official OpenAI
Python SDK and prints what it saw as JSON.

Usage: sdk_check.py BASE_URL TOKEN MODEL

The first request wakes the deployment from zero instances: vLLM on CPU takes
tens of seconds to load, so the client's timeout is generous. The test model
has random weights: ignore_eos (a vLLM sampling parameter, sent in the body
through extra_body) makes it generate exactly max_tokens tokens."""
import json
import sys
import time

from openai import OpenAI

base, token, model = sys.argv[1:4]
client = OpenAI(base_url=base, api_key=token, max_retries=0, timeout=300)
fixed = {"ignore_eos": True}
out = {}

t0 = time.monotonic()
raw = client.chat.completions.with_raw_response.create(
    model=model, messages=[{"role": "user", "content": "Hello there"}], max_tokens=8,
    extra_body=fixed)
r = raw.parse()
out["chat"] = {"content": r.choices[0].message.content, "finish_reason": r.choices[0].finish_reason,
               "completion_tokens": r.usage.completion_tokens, "prompt_tokens": r.usage.prompt_tokens,
               "model": r.model, "cold_start": raw.headers.get("x-thaw-cold-start"),
               "seconds": time.monotonic() - t0}

roles, chunks, finish, usage = [], [], None, None
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Stream please"}], max_tokens=12, stream=True,
    stream_options={"include_usage": True}, extra_body=fixed)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            chunks.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream"] = {"roles": roles, "chunks": len(chunks), "finish_reason": finish, "usage": usage}

c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, extra_body=fixed)
out["completion"] = {"text": c.choices[0].text, "finish_reason": c.choices[0].finish_reason,
                     "completion_tokens": c.usage.completion_tokens}

print(json.dumps(out))
