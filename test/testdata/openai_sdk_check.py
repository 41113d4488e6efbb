"""Calls thaw with the official OpenAI Python SDK and prints what it saw as
JSON. Usage: openai_sdk_check.py BASE_URL TOKEN MODEL"""
import json
import sys
import time

from openai import OpenAI, NotFoundError

base, token, model = sys.argv[1:4]
client = OpenAI(base_url=base, api_key=token, max_retries=0, timeout=60)
out = {}

r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hello there"}], max_tokens=4)
out["chat"] = {"content": r.choices[0].message.content, "finish_reason": r.choices[0].finish_reason,
               "completion_tokens": r.usage.completion_tokens, "prompt_tokens": r.usage.prompt_tokens}

t0 = time.monotonic()
chunks, arrivals = [], []
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Stream please"}], max_tokens=6, stream=True,
    stream_options={"include_usage": True})
usage = None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    if chunk.choices and chunk.choices[0].delta.content:
        chunks.append(chunk.choices[0].delta.content)
        arrivals.append(time.monotonic() - t0)
out["stream"] = {"chunks": chunks, "first_s": arrivals[0] if arrivals else None,
                 "last_s": arrivals[-1] if arrivals else None, "usage": usage}

c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=3)
out["completion"] = {"text": c.choices[0].text, "completion_tokens": c.usage.completion_tokens}

out["models"] = [m.id for m in client.models.list()]

try:
    client.chat.completions.create(model=model + "-missing", messages=[{"role": "user", "content": "x"}])
    out["missing"] = "no error"
except NotFoundError as e:
    out["missing"] = {"status": e.status_code, "message": str(e)}

print(json.dumps(out))
