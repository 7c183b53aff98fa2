"""Load test for ``adah serve``: N requests over C concurrent keep-alive connections, a mix of
text searches, image searches and thumbnails; prints p50/p99 latency per kind and the errors.

    adah serve --index runs/index &
    python benchmarks/load_serve.py --url http://127.0.0.1:8000 --requests 2000 --concurrency 8

``tests/test_load.py`` runs it against a real index and asserts zero errors (no time limits).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

#: share of each kind of request in the mix
MIX = (("text", 0.7), ("thumbnail", 0.2), ("image", 0.1))
DEFAULT_WORDS = ("dog", "person", "table", "red", "circle")


@dataclass
class LoadReport:
    requests: int
    concurrency: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict:
        kinds = {}
        for kind, values in sorted(self.latency_ms.items()):
            arr = np.asarray(values)
            kinds[kind] = {"count": int(arr.size), "p50_ms": float(np.percentile(arr, 50)),
                           "p99_ms": float(np.percentile(arr, 99))}
        every = np.concatenate([np.asarray(v) for v in self.latency_ms.values()]) if self.latency_ms else np.zeros(1)
        return {"requests": self.requests, "concurrency": self.concurrency, "errors": len(self.errors),
                "seconds": round(self.seconds, 3), "requests_per_s": round(self.requests / self.seconds, 1),
                "p50_ms": float(np.percentile(every, 50)), "p99_ms": float(np.percentile(every, 99)), "by_kind": kinds}

    def table(self) -> str:
        s = self.summary()
        lines = [f"{s['requests']} requests over {s['concurrency']} connections in {s['seconds']:.2f} s "
                 f"({s['requests_per_s']:.0f} req/s), {s['errors']} errors",
                 f"{'kind':<11}{'count':>7}{'p50 ms':>9}{'p99 ms':>9}"]
        for kind, k in s["by_kind"].items():
            lines.append(f"{kind:<11}{k['count']:>7}{k['p50_ms']:>9.2f}{k['p99_ms']:>9.2f}")
        lines.append(f"{'all':<11}{s['requests']:>7}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}")
        return "\n".join(lines)


def query_image_png(seed: int = 0, side: int = 96) -> bytes:
    """A small random RGB PNG to upload."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def plan(num: int, words: list[str], count: int, seed: int = 0) -> list[tuple[str, dict]]:
    """``num`` requests: (kind, arguments), drawn with ``seed`` from :data:`MIX`."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice([k for k, _ in MIX], size=num, p=[p for _, p in MIX])
    out = []
    for kind in kinds:
        if kind == "text":
            text = " ".join(rng.choice(words, size=int(rng.integers(1, 4))))
            out.append(("text", {"text": text, "k": int(rng.integers(1, 21))}))
        elif kind == "thumbnail":
            out.append(("thumbnail", {"row": int(rng.integers(0, count))}))
        else:
            out.append(("image", {"k": int(rng.integers(1, 21))}))
    return out


async def _run(url: str, requests: list[tuple[str, dict]], concurrency: int, answer_ok) -> LoadReport:
    import httpx2 as httpx

    image = query_image_png()
    report = LoadReport(len(requests), concurrency, 0.0)
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client):
        while not queue.empty():
            kind, args = queue.get_nowait()
            start = time.perf_counter()
            try:
                if kind == "text":
                    r = await client.post("/api/search/text", json={**args, "target": "image"})
                elif kind == "thumbnail":
                    r = await client.get(f"/api/thumbnail/{args['row']}")
                else:
                    r = await client.post("/api/search/image", data={"k": str(args["k"])},
                                          files={"image": ("q.png", image, "image/png")})
                ok = r.status_code == 200 and answer_ok(kind, args, r)
                if not ok:
                    report.errors.append(f"{kind} {args}: HTTP {r.status_code} {r.text[:200]}")
            except Exception as exc:  # noqa: BLE001 - a load test counts every failure
                report.errors.append(f"{kind} {args}: {type(exc).__name__}: {exc}")
            report.latency_ms.setdefault(kind, []).append((time.perf_counter() - start) * 1000)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        report.seconds = time.perf_counter() - started
    return report


def _answer_ok(kind: str, args: dict, r) -> bool:
    """A PNG for a thumbnail; ``k`` hits, best first, for a search."""
    if kind == "thumbnail":
        return r.headers.get("content-type") == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    hits = r.json().get("hits")
    return (isinstance(hits, list) and len(hits) == args["k"]
            and [h["distance"] for h in hits] == sorted(h["distance"] for h in hits))


def run_load(url: str, *, requests: int = 2000, concurrency: int = 8, seed: int = 0,
             words: list[str] | None = None) -> LoadReport:
    """Send ``requests`` requests to the server at ``url`` over ``concurrency`` connections.
    ``words``: query words the index's vocabulary knows (default :data:`DEFAULT_WORDS`)."""
    import httpx2 as httpx

    info = httpx.get(f"{url}/api/info", timeout=30.0).raise_for_status().json()
    words = words or DEFAULT_WORDS
    return asyncio.run(_run(url, plan(requests, list(words), int(info["count"]), seed), concurrency, _answer_ok))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--words", nargs="*", help="Query words the index's vocabulary knows.")
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    args = parser.parse_args(argv)
    report = run_load(args.url, requests=args.requests, concurrency=args.concurrency, words=args.words)
    print(json.dumps(report.summary(), indent=2) if args.json else report.table())
    for line in report.errors[:10]:
        print("error:", line, file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
