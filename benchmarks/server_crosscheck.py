"""Regenerates the cross-check table of docs/serving.md: the plugin's server suite and the openai client, case by case on one server.

For each repeat and each concurrency, the plugin (a pytest session of the server suite's
concurrency cases through ``--mlx-server-url``, continuous concurrency) and an independent
client written with the official ``openai`` package (N threads sharing one ``OpenAI`` client,
each sending its next streamed request as its last one ends; TTFT from calling ``create`` to
the first content chunk, as a user of the client measures it, and also from the moment its HTTP
layer sends the request (a request hook), as the plugin measures it; aggregate = the server's
completion tokens / the first request sent to the last one's end) measure the same server in
alternating order (the plugin first on even repeats). ``--mode interleaved`` runs the suite's
load generator in this process instead, back to back with the openai client per concurrency, so
that a busy machine drifts seconds between the two, not minutes (the CI test uses it). Both
send the same request: the synthetic image at the size with a distinct corner stamp each, the
prompt, ``max_tokens`` and the end-of-sequence ids biased away, so the output length is fixed. The ratios plugin / openai of aggregate tok/s and TTFT p50 are the
median over repeats.

    python -m benchmarks.server_crosscheck --concurrency 1,4 --requests 8 --repeats 3
    python -m benchmarks.server_crosscheck --mode interleaved --requests 4 --repeats 5
    python -m benchmarks.server_crosscheck --url http://127.0.0.1:8080 --model ./my-model
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pytest_mlxvlm.config.settings import DEFAULT_PROMPT, parse_resolution
from pytest_mlxvlm.measure.images import image_file
from pytest_mlxvlm.models.loading import resolve_path
from pytest_mlxvlm.suites.server.bench import MlxServer
from pytest_mlxvlm.suites.server.client import EOS_BIAS, ImageVariants, eos_token_ids, percentiles
from pytest_mlxvlm.suites.server.load import run_continuous
from pytest_mlxvlm.suites.server.loadstats import summarize_run
from pytest_mlxvlm.suites.server.workload import one_image_jobs

from ._common import parser, server_url, workdir

METRICS = ("aggregate_tps", "ttft_p50_ms")
TOLERANCE = 0.10  # the acceptance: aggregate and TTFT p50 within 10% at concurrency 1 and 4


def openai_case(url: str, model: str, clients: int, requests: int, max_tokens: int,
                eos_ids: list[int], image: Path, prompt: str = DEFAULT_PROMPT,
                warmup: int = 1) -> dict[str, Any]:
    """``clients`` threads keep one streamed request each in flight through one ``openai.OpenAI``
    (its own connection pool), ``requests`` in all after ``warmup`` per client."""
    import openai

    sent = threading.local()  # when this thread's request left the client (an HTTP request hook)

    def on_request(_: Any) -> None:
        sent.at = time.perf_counter()

    http = getattr(openai, "DefaultHttpx2Client", None) or openai.DefaultHttpxClient
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600,
                           http_client=http(event_hooks={"request": [on_request]}))
    variants = ImageVariants(image)
    lock = threading.Lock()
    rows: list[dict[str, float]] = []
    errors: list[BaseException] = []

    def one() -> dict[str, float]:
        content = [{"type": "image_url", "image_url": {"url": variants.next_url()}},
                   {"type": "text", "text": prompt}]
        start = time.perf_counter()
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], stream=True,
            stream_options={"include_usage": True}, max_tokens=max_tokens, temperature=0.0, seed=0,
            logit_bias={str(i): EOS_BIAS for i in eos_ids} or None)
        chunks, tokens = [], 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                chunks.append(time.perf_counter())
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        end = time.perf_counter()
        return {"start": start, "end": end, "ttft": chunks[0] - start, "ttft_sent": chunks[0] - sent.at,
                "tokens": tokens or len(chunks),
                "itl": [b - a for a, b in zip(chunks, chunks[1:])]}

    def run(total: int, keep: bool) -> None:
        left = [total]

        def worker() -> None:
            while True:
                with lock:
                    if left[0] <= 0 or errors:
                        return
                    left[0] -= 1
                try:
                    row = one()
                except BaseException as exc:  # noqa: BLE001 - reported after the join
                    errors.append(exc)
                    return
                if keep:
                    with lock:
                        rows.append(row)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"openai client: {errors[0]}") from errors[0]

    run(warmup * clients, keep=False)
    run(requests, keep=True)
    client.close()
    duration = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    itl = [g for r in rows for g in r["itl"]]
    return {"tool": "openai", "clients": clients, "requests": len(rows),
            "aggregate_tps": sum(r["tokens"] for r in rows) / duration,
            "ttft_p50_ms": percentiles([r["ttft"] for r in rows], (50,))["p50"] * 1000,
            "ttft_sent_p50_ms": percentiles([r["ttft_sent"] for r in rows], (50,))["p50"] * 1000,
            "itl_p50_ms": percentiles(itl, (50,))["p50"] * 1000,
            "itl_p95_ms": percentiles(itl, (95,))["p95"] * 1000,
            "per_request_tps": statistics.median(r["tokens"] / (r["end"] - r["start"]) for r in rows),
            "tokens": sorted({r["tokens"] for r in rows})}


def plugin_cases(url: str, spec: str, levels: list[int], requests_per_client: int, max_tokens: int,
                 size: str, prompt: str = DEFAULT_PROMPT) -> list[dict[str, Any]]:
    """One pytest session of the server suite's concurrency cases (continuous concurrency,
    ``requests_per_client`` x N requests after one warm-up request per client) against ``url``."""
    with tempfile.TemporaryDirectory(prefix="mlxvlm-crosscheck-") as tmp:
        report = Path(tmp) / "r.json"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark",
                   "--pyargs", "pytest_mlxvlm.builtin.test_mlxvlm_server", "--mlx-suite", "server",
                   "--mlx-model", spec, "--mlx-server-url", url, "--mlx-resolutions", size,
                   "--mlx-server-concurrency", ",".join(map(str, levels)), "--mlx-rounds", str(requests_per_client),
                   "--mlx-warmup", "1", "--mlx-max-tokens", str(max_tokens), "--mlx-prompt", prompt,
                   "-k", "server_concurrency", f"--mlx-json={report}", "--rootdir", tmp]
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp, timeout=3600)
        if not report.exists():
            raise RuntimeError(f"the plugin's session wrote no report (exit {done.returncode}): "
                               f"{(done.stdout + done.stderr)[-2000:]}")
        doc = json.loads(report.read_text())
    out = []
    for case in doc["results"]:
        info = case["workload"]["server"]
        samples = case["samples"]
        out.append({"tool": "plugin", "clients": info["clients"], "requests": info["requests"],
                    "aggregate_tps": info["aggregate_tps"], "ttft_p50_ms": info["ttft_ms"]["p50"],
                    "itl_p50_ms": info["itl_ms"]["p50"], "itl_p95_ms": info["itl_ms"]["p95"],
                    "per_request_tps": statistics.median(s["end_to_end_tps"] for s in samples),
                    "tokens": sorted({s["generation_tokens"] for s in samples})})
    return out


def plugin_block(url: str, folder: Path, clients: int, requests: int, max_tokens: int, eos_ids: list[int],
                 image: Path, prompt: str = DEFAULT_PROMPT, warmup: int = 1) -> dict[str, Any]:
    """The suite's load generator and summary in this process (what ``test_server_concurrency``
    runs, without pytest): ``clients`` kept in flight through a server's keep-alive pool."""
    server = MlxServer(spec="crosscheck", url=url, request_model=str(folder), eos_ids=eos_ids, timeout_s=600)
    try:
        run = run_continuous(server.request, one_image_jobs(str(folder), prompt, image, max_tokens, eos_ids, "-"),
                             clients, requests=requests, warmup=warmup, abort=server.pool.abort)
    finally:
        server.stop()
    info = summarize_run(run, max_tokens)
    return {"tool": "plugin", "clients": clients, "requests": info["requests"],
            "aggregate_tps": info["aggregate_tps"], "ttft_p50_ms": info["ttft_ms"]["p50"],
            "itl_p50_ms": info["itl_ms"]["p50"], "itl_p95_ms": info["itl_ms"]["p95"],
            "per_request_tps": statistics.median(t.sample().end_to_end_tps for t in run.timings),
            "tokens": sorted({t.completion_tokens for t in run.timings})}


def crosscheck(url: str, spec: str, folder: Path, levels: list[int], requests_per_client: int,
               max_tokens: int, repeats: int, size: str = "224x224", mode: str = "session") -> dict[str, Any]:
    """Both clients on the server at ``url``, in alternating order; the rows and, per concurrency,
    the median ratios plugin / openai. ``mode`` "session": the plugin as users run it, one pytest
    session a repeat; "interleaved": the suite's load generator in this process, case by case
    (plugin and openai back to back per concurrency, so that a busy machine's drift between
    them is seconds, not minutes)."""
    image = image_file(parse_resolution(size), Path(tempfile.mkdtemp(prefix="mlxvlm-crosscheck-")))
    eos = eos_token_ids(folder)
    rows: list[dict[str, Any]] = []
    if mode == "interleaved":
        for clients in levels:  # one warm-up per client for each side, unmeasured
            plugin_block(url, folder, clients, clients, max_tokens, eos, image, warmup=0)
            openai_case(url, str(folder), clients, clients, max_tokens, eos, image, warmup=0)
    for repeat in range(repeats):
        def ours() -> None:
            for row in plugin_cases(url, spec, levels, requests_per_client, max_tokens, size):
                rows.append({**row, "repeat": repeat})

        def theirs() -> None:
            for clients in levels:
                row = openai_case(url, str(folder), clients, requests_per_client * clients, max_tokens, eos, image,
                                  warmup=0 if mode == "interleaved" else 1)
                rows.append({**row, "repeat": repeat})

        if mode == "interleaved":  # per concurrency, plugin and openai back to back
            for clients in levels:
                pair = [lambda c=clients: rows.append({**plugin_block(url, folder, c, requests_per_client * c,
                                                                      max_tokens, eos, image, warmup=0),
                                                       "repeat": repeat}),
                        lambda c=clients: rows.append({**openai_case(url, str(folder), c, requests_per_client * c,
                                                                     max_tokens, eos, image, warmup=0),
                                                       "repeat": repeat})]
                for step in (pair if repeat % 2 == 0 else pair[::-1]):
                    step()
            continue
        for step in ((ours, theirs) if repeat % 2 == 0 else (theirs, ours)):
            step()
    ratios = {c: {m: statistics.median(repeat_ratios(rows, c, m)) for m in METRICS} for c in levels}
    sent_ratios = {c: statistics.median(repeat_ratios(rows, c, "ttft_p50_ms", "ttft_sent_p50_ms")) for c in levels}
    return {"rows": rows, "ratios": ratios, "ttft_from_send_ratios": sent_ratios}


def repeat_pairs(rows: list[dict[str, Any]], clients: int, metric: str,
                 openai_metric: str | None = None) -> list[tuple[float, float]]:
    """Each repeat's (plugin's ``metric``, openai's ``openai_metric`` or the same) at ``clients``."""
    by = {(r["tool"], r["repeat"]): r for r in rows if r["clients"] == clients}
    return [(by[("plugin", k)][metric], by[("openai", k)][openai_metric or metric])
            for k in sorted({k for _, k in by})]


def repeat_ratios(rows: list[dict[str, Any]], clients: int, metric: str,
                  openai_metric: str | None = None) -> list[float]:
    """Each repeat's ratio plugin / openai (see ``repeat_pairs``)."""
    return [a / b for a, b in repeat_pairs(rows, clients, metric, openai_metric)]


def table(result: dict[str, Any]) -> str:
    lines = ["| clients | tool | requests | tokens | TTFT p50 | TTFT p50 from the send | ITL p50/p95 | "
             "tok/s per request | aggregate tok/s |", "|---|---|---|---|---|---|---|---|---|"]
    for clients in sorted(result["ratios"]):
        for tool in ("plugin", "openai"):
            got = [r for r in result["rows"] if r["clients"] == clients and r["tool"] == tool]
            med = {m: statistics.median(r.get(m, r["ttft_p50_ms"]) for r in got) for m in
                   ("ttft_p50_ms", "ttft_sent_p50_ms", "itl_p50_ms", "itl_p95_ms", "per_request_tps", "aggregate_tps")}
            lines.append(f"| {clients} | {tool} | {got[0]['requests']} x {len(got)} | "
                         f"{'/'.join(map(str, sorted({t for r in got for t in r['tokens']})))} | "
                         f"{med['ttft_p50_ms']:.0f} ms | {med['ttft_sent_p50_ms']:.0f} ms | "
                         f"{med['itl_p50_ms']:.1f} / {med['itl_p95_ms']:.1f} ms | "
                         f"{med['per_request_tps']:.1f} | {med['aggregate_tps']:.1f} |")
        ratio = result["ratios"][clients]
        lines.append(f"| {clients} | plugin / openai | | | {ratio['ttft_p50_ms']:.3f} | "
                     f"{result['ttft_from_send_ratios'][clients]:.3f} | | | {ratio['aggregate_tps']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="synthetic:tiny")
    ap.add_argument("--url", help="a running server (default: start mlx_vlm.server for --model)")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--requests", type=int, default=8, help="requests per client per case")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="224x224")
    ap.add_argument("--mode", choices=("session", "interleaved"), default="session",
                    help="session: the plugin as a pytest session per repeat; interleaved: the suite's load "
                         "generator in this process, back to back with the openai client per concurrency")
    ap.add_argument("--out", help="folder for crosscheck.json and crosscheck.md")
    args = ap.parse_args()
    folder = resolve_path(args.model)
    levels = [int(x) for x in args.concurrency.split(",")]
    with server_url(args.url, folder) as url:
        result = crosscheck(url, args.model, folder, levels, args.requests, args.max_tokens, args.repeats, args.size,
                            args.mode)
    text = table(result)
    verdict = ", ".join(f"c{c}: aggregate {r['aggregate_tps']:.3f}, TTFT p50 {r['ttft_p50_ms']:.3f}"
                        for c, r in result["ratios"].items())
    agree = all(abs(v - 1) <= TOLERANCE for r in result["ratios"].values() for v in r.values())
    summary = (f"plugin / openai ({args.mode}), median over {args.repeats} repeats: {verdict}; "
               f"{'within' if agree else 'NOT within'} {TOLERANCE:.0%}")
    print(text)
    print(summary)
    if args.out:
        out = workdir(args.out, "crosscheck")
        (out / "crosscheck.json").write_text(json.dumps({"args": vars(args), **result}, indent=1) + "\n")
        (out / "crosscheck.md").write_text(text + "\n\n" + summary + "\n")


if __name__ == "__main__":
    main()
