"""Concurrent streaming clients for ``bench/vllm_serving.py``: timing, the OpenAI server, percentiles.

A *call* is a function that sends one request and returns an iterator yielding ``None`` whenever a
streamed piece of the reply arrives, then the reply's token count (an int). :func:`run_clients` runs
``N`` client threads, each sending its requests one after another, and summarises: requests/s, output
tokens/s (per wall-clock and per CPU second of the engine's processes), time to first token (TTFT) and
inter-token latency (ITL, per request: time from the first to
the last streamed piece over ``tokens - 1``), p50 and p95, and the load average before and after.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

Call = Callable[[], Iterator[int | None]]
START_TIMEOUT_S = 900


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and every live process it started.

    On a machine shared with other jobs, output tokens per CPU second compares engines by the work they
    do; wall-clock rates also depend on how much of the machine each engine's processes got.
    """
    import psutil

    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def percentiles(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """p50 and p95 (nearest rank) of ``values`` times ``scale``."""
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * scale, digits)

    return {"p50": rank(0.50), "p95": rank(0.95)}


def one_request(call: Call) -> dict:
    begin, arrivals, tokens = time.perf_counter(), [], 0
    for item in call():
        if item is None:
            arrivals.append(time.perf_counter())
        else:
            tokens = item
    if not arrivals or tokens < 2:
        raise RuntimeError(f"a streamed reply had {len(arrivals)} pieces and {tokens} tokens")
    return {"ttft": arrivals[0] - begin, "itl": (arrivals[-1] - arrivals[0]) / (tokens - 1), "tokens": tokens}


def run_clients(calls: list[Call], per_client: int, new_tokens: int) -> dict:
    """Every call in its own thread, ``per_client`` requests each; the summary (see module docstring)."""
    results: list[dict] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client(call: Call) -> None:
        try:
            for _ in range(per_client):
                result = one_request(call)
                with lock:
                    results.append(result)
        except BaseException as exc:  # reported after the join
            failures.append(exc)

    load_before, begin, cpu_before = round(os.getloadavg()[0], 2), time.perf_counter(), tree_cpu_seconds()
    threads = [threading.Thread(target=client, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu_seconds = time.perf_counter() - begin, tree_cpu_seconds() - cpu_before
    if failures:
        raise failures[0]
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": len(calls),
        "requests": len(results),
        "seconds": round(seconds, 3),
        "load": [load_before, round(os.getloadavg()[0], 2)],
        "requests_per_s": round(len(results) / seconds, 3),
        "output_tokens_per_s": round(tokens / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "output_tokens_per_cpu_s": round(tokens / cpu_seconds, 1) if cpu_seconds > 0 else None,
        "tokens_per_request": sorted({r["tokens"] for r in results}),
        "ttft_s": percentiles([r["ttft"] for r in results]),
        "itl_ms": percentiles([r["itl"] for r in results], scale=1000, digits=1),
    }


def image_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def http_stream(base: str, image, prompt: str, new_tokens: int) -> Call:
    """A call streaming one greedy chat completion of exactly ``new_tokens`` tokens from vLLM's server."""
    content = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}},
        {"type": "text", "text": prompt},
    ]
    body = {"model": "bench", "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": new_tokens, "min_tokens": new_tokens, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    data = json.dumps(body).encode()

    def call() -> Iterator[int | None]:
        request = urllib.request.Request(
            f"{base}/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=1200) as response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    yield event["usage"]["completion_tokens"]
                elif event["choices"] and event["choices"][0]["delta"].get("content"):
                    yield None

    return call


@contextlib.contextmanager
def running_server(model: str, log: Path, vllm_args: list[str], dtype: str = "fp32", port: int = 8766):
    """``llava-vitsplit serve`` on ``model`` (in ``dtype``) until the block ends; yields (base URL, start-up figures)."""
    command = [sys.executable, "-m", "llava_vitsplit.cli", "serve", "--model", model, "--port", str(port),
               "--served-model-name", "bench", "--dtype", dtype, "--", *vllm_args]  # fmt: skip
    base, load_before, begin = f"http://127.0.0.1:{port}", round(os.getloadavg()[0], 2), time.perf_counter()
    with log.open("w") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    try:
        while True:
            if server.poll() is not None or time.perf_counter() - begin > START_TIMEOUT_S:
                raise SystemExit(f"the server did not start; see {log}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                time.sleep(1)
        startup = {
            "seconds": round(time.perf_counter() - begin, 2),
            "load": [load_before, round(os.getloadavg()[0], 2)],
        }
        yield base, startup
    finally:
        server.terminate()
        server.wait(timeout=120)
