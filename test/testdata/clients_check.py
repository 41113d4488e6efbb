"""Leaves requests early with the official OpenAI Python SDK, the ways
applications do. Usage: clients_check.py BASE_URL TOKEN MODEL

Prints {"ready": true} once the SDK is loaded, then runs one case per line
read from stdin and prints what it saw as one JSON line. The process stays
alive between cases, so a connection the SDK failed to close would stay
open: the caller checks thaw's gauges before sending the next case. Each
request carries the header X-E2e-Case: py-<case>.
"""
import json
import sys
import time

from openai import APITimeoutError, OpenAI

base, token, model = sys.argv[1:4]
client = OpenAI(base_url=base, api_key=token, max_retries=0, timeout=60)
messages = [{"role": "user", "content": "Tell me a long story"}]


def mark(case):
    return {"X-E2e-Case": "py-" + case}


def content(chunk):
    if chunk.choices and chunk.choices[0].delta.content:
        return chunk.choices[0].delta.content
    return None


def break_close(case):
    """Iterate a stream, break after two chunks, then stream.close()."""
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=200, stream=True, extra_headers=mark(case))
    got = []
    for chunk in stream:
        if content(chunk):
            got.append(content(chunk))
        if len(got) == 2:
            break
    stream.close()
    return {"chunks": got}


def timeout(case):
    """A non-streaming request that outlives client.with_options(timeout=0.5)."""
    t0 = time.monotonic()
    try:
        client.with_options(timeout=0.5).chat.completions.create(
            model=model, messages=messages, max_tokens=200, extra_headers=mark(case))
        return {"error": None, "elapsed_s": time.monotonic() - t0}
    except APITimeoutError as e:
        return {"error": type(e).__name__, "elapsed_s": time.monotonic() - t0}


def with_block(case):
    """Leave a `with ... as stream:` block after two chunks."""
    got = []
    with client.chat.completions.create(
            model=model, messages=messages, max_tokens=200, stream=True, extra_headers=mark(case)) as stream:
        for chunk in stream:
            if content(chunk):
                got.append(content(chunk))
            if len(got) == 2:
                break
    return {"chunks": got}


CASES = {"break": break_close, "timeout": timeout, "with": with_block}

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    case = line.strip()
    if not case:
        continue
    try:
        out = CASES[case](case)
    except Exception as e:  # reported to the Go test, which fails on it
        out = {"exception": "%s: %s" % (type(e).__name__, e)}
    out["case"] = case
    print(json.dumps(out), flush=True)
