"""Fuzz every parameter of the console's API: each refused with a message naming a field, none crashing.

    uv run python scripts/fuzz_api.py --url http://127.0.0.1:7860 --user admin --password ...

Enumerates the named endpoints from the app's API description (``gradio_client``'s ``view_api``),
then calls each over plain HTTP (``/gradio_api/call/<name>``, so types, missing values and raw
bodies are not filtered by a client) with one parameter at a time replaced by a hostile value
(wrong types, huge numbers, ``"#9999999999999999999"``, huge strings, ``[`` x 100,000 as text and as
raw JSON nesting), every shorter argument list (missing values) and one oversized body. A call is:

- ``refused_named``: an error whose message names a field (``field: problem``), or an HTTP 4xx
  whose JSON ``error`` does;
- ``accepted``: it succeeded (the hostile value was allowed there, e.g. a note with a flag);
- ``crashed``: anything else: a bare "Error", an error naming nothing, a 5xx, no answer.

:func:`fuzz` returns ``{"tried", "refused_named", "accepted", "crashed", "crashes": [...]}``;
``scripts/stress.py`` and the tests call it. The CLI prints it as JSON; exit status 1 on a crash.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEEP = 100_000  # "[" x DEEP: deeper than any JSON parser's stack
HUGE_CHARS = 200_000  # a huge string that still fits the body limit (the limit itself is tried apart)
OVERSIZED_BODY = 4_000_000  # bytes: over the console's request-body limit (2 MB)
# A message names a field when it starts with one, optionally after "invalid case: " and the like.
_NAMED = re.compile(r"^(invalid \w+: )?(<root>|[A-Za-z_][\w.\[\]#-]*|line \d+[^:]{0,40}): \S")
_CRASH_WORDS = ("could not be handled", "Traceback")

HOSTILE: list[tuple[str, Any]] = [
    ("null", None),
    ("int", 5),
    ("float", 1.5),
    ("bool", True),
    ("list", ["x"]),
    ("object", {"a": 1}),
    ("huge int", 10**400),
    ("negative huge int", -(10**400)),
    ("huge row id", "#9999999999999999999"),
    ("long digits", "9" * 5000),
    ("empty", ""),
    ("huge string", "x" * HUGE_CHARS),
    ("deep brackets as text", "[" * DEEP),
    ("control characters", "a\x00b\x1b[31m\u202e"),
    ("path-like", "../" * 1700),
]


def endpoints(client: Any) -> dict[str, list[dict[str, Any]]]:
    """``{"/compare": [{"name", "type", "has_default", "default"}, ...], ...}`` from the app's API
    description (``client`` is a logged-in :class:`gradio_client.Client`)."""
    info = client.view_api(return_format="dict", print_info=False)
    return {
        name: [
            {"name": p["parameter_name"], "type": p["python_type"]["type"],
             "has_default": p.get("parameter_has_default", False), "default": p.get("parameter_default")}
            for p in spec["parameters"]
        ]
        for name, spec in info["named_endpoints"].items()
    }


def _baseline(params: list[dict[str, Any]], valid: list[Any] | None) -> list[Any]:
    if valid is not None:
        return list(valid)
    return [p["default"] if p["has_default"] else "" for p in params]


def cases_for(name: str, params: list[dict[str, Any]], valid: list[Any] | None) -> Iterator[tuple[str, Any]]:
    """(label, body) pairs for one endpoint; a body is a JSON-able dict or raw bytes."""
    base = _baseline(params, valid)
    for i, param in enumerate(params):
        for label, value in HOSTILE:
            data = list(base)
            data[i] = value
            yield f"{name} {param['name']}={label}", {"data": data}
        raw_args = [json.dumps(v) for v in base]
        raw_args[i] = "[" * DEEP + "]" * DEEP
        yield f"{name} {param['name']}=deep nesting", ('{"data": [' + ",".join(raw_args) + "]}").encode()
    for k in range(len(params)):  # every shorter argument list: missing values
        yield f"{name} {k} of {len(params)} values", {"data": base[:k]}
    yield f"{name} data=null", {"data": None}
    yield f"{name} data=object", {"data": {"x": 1}}
    yield f"{name} oversized body", {"data": ["x" * OVERSIZED_BODY for _ in params] or ["x" * OVERSIZED_BODY]}


def _outcome(http: httpx.Client, name: str, body: Any) -> tuple[str, str]:
    """("refused_named" | "accepted" | "crashed", detail) for one call."""
    path = f"/gradio_api/call{name}"
    try:
        if isinstance(body, bytes):
            r = http.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = http.post(path, json=body)
    except httpx.HTTPError as exc:
        return "crashed", f"no answer: {type(exc).__name__}"
    if r.status_code >= 500:
        return "crashed", f"HTTP {r.status_code}"
    if r.status_code >= 400:
        return _judge(_http_error(r))
    event_id = r.json().get("event_id")
    try:
        stream = http.get(f"{path}/{event_id}").text
    except httpx.HTTPError as exc:
        return "crashed", f"no result: {type(exc).__name__}"
    if "event: complete" in stream:
        return "accepted", ""
    match = re.search(r"event: error\ndata: (.*)", stream)
    if not match:
        return "crashed", stream[:200]
    try:
        message = (json.loads(match.group(1)) or {}).get("error")
    except json.JSONDecodeError:
        message = match.group(1)
    return _judge(message)


def _http_error(r: httpx.Response) -> str | None:
    try:
        payload = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI's 422
        loc = ".".join(str(x) for x in detail[0].get("loc", [])[1:]) or "body"
        return f"{loc}: {detail[0].get('msg', 'invalid')}"
    return str(detail) if detail else None


def _judge(message: str | None) -> tuple[str, str]:
    text = (message or "").strip()
    if not text or text == "Error" or any(w in text for w in _CRASH_WORDS) or not _NAMED.match(text):
        return "crashed", text[:300] or "bare error"
    return "refused_named", text[:120]


def fuzz(
    client: Any,
    *,
    valid: dict[str, list[Any]] | None = None,
    only: list[str] | None = None,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Fuzz every parameter of every named endpoint of ``client``'s app (a logged-in
    :class:`gradio_client.Client`); ``valid`` gives a valid argument list per endpoint (the other
    parameters keep it while one is hostile; default: empty strings and defaults); ``only`` limits
    the endpoints. Returns ``{"tried", "refused_named", "accepted", "crashed", "crashes",
    "endpoints"}``; ``crashes`` lists (label, detail) of every crash."""
    http = httpx.Client(
        base_url=client.src.rstrip("/"), cookies=client.cookies, headers=client.headers, timeout=timeout_s
    )
    report: dict[str, Any] = {"tried": 0, "refused_named": 0, "accepted": 0, "crashed": 0, "crashes": []}
    found = endpoints(client)
    report["endpoints"] = {n: [p["name"] for p in ps] for n, ps in found.items()}
    with http:
        for name, params in found.items():
            if only and name not in only:
                continue
            for label, body in cases_for(name, params, (valid or {}).get(name)):
                kind, detail = _outcome(http, name, body)
                report["tried"] += 1
                report[kind] += 1
                if kind == "crashed":
                    report["crashes"].append((label, detail))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--only", nargs="*", help="endpoints to fuzz, e.g. /compare")
    args = p.parse_args(argv)
    from gradio_client import Client

    report = fuzz(Client(args.url, auth=(args.user, args.password), verbose=False), only=args.only)
    print(json.dumps(report, indent=2))
    return 1 if report["crashed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
