"""adah serve's API (FastAPI TestClient) on a real coco_mini index: every endpoint answers what
the Python API answers, and every limit and bad request gets its 4xx status and a clear JSON
message; the CLI's errors and its warning for a non-loopback host."""

from __future__ import annotations

import io
import socket
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from adah.cli import app as cli_app
from adah.errors import AdahError
from adah.index import Index, UnknownWordsError
from adah.serve import Limits, create_app, is_loopback
from serve_support import COCO, coco_index, needs_coco

pytestmark = [pytest.mark.slow, needs_coco]

LIMITS = Limits(max_body_bytes=300_000, max_k=50, max_text_chars=200, max_image_pixels=2_000_000)
PHOTO = COCO / "images" / "30752.jpg"  # a man and his dog skiing (640x426)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    with Index.load(coco_index()) as ix:
        yield ix


@pytest.fixture(scope="module")
def client(index):
    with TestClient(create_app(index, limits=LIMITS)) as c:
        yield c


def public(hits: list[dict]) -> list[dict]:
    """Hits as the service shows them: no server paths, a thumbnail URL."""
    out = []
    for h in hits:
        h = dict(h)
        h["thumbnail"] = f"/api/thumbnail/{h['row']}?id={quote(h['id'], safe='')}" if h.pop("image_path") else None
        out.append(h)
    return out


def png_of(size: tuple[int, int], color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def assert_error(r, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    for needle in needles:
        assert needle in body["error"], (needle, body["error"])


# --------------------------------------------------------------------------- endpoints
def test_health_info_and_page(client, index):
    assert len(index) == 159
    assert client.get("/api/health").json() == {"status": "ok", "count": 159}
    info = client.get("/api/info").json()
    assert info["count"] == 159 and info["bits"] == 32 and info["modalities"] == ["image", "text"]
    assert info["collection"]["name"] == "coco_mini" and info["can_search"] == {"text": True, "image": True}
    assert info["limits"] == {"max_body_bytes": 300_000, "max_k": 50, "max_text_chars": 200,
                              "max_image_pixels": 2_000_000, "default_k": 10, "decode_side": 512, "max_decodes": 2,
                              "thumbnail_cache_bytes": 64 * 2**20}
    assert info["model"]["checkpoint"] == "best.pt" and info["path"] == "coco_index"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for element in ('id="q"', 'id="file"', 'id="attention"', 'id="results"', 'id="overlay"'):
        assert element in page.text


@pytest.mark.parametrize("text,target,k", [("a dog in the snow", "image", 10), ("pizza on a table", "text", 7),
                                           ("sheep", "image", 50)])
def test_text_search_equals_python_api(client, index, text, target, k):
    r = client.post("/api/search/text", json={"text": text, "k": k, "target": target})
    assert r.status_code == 200, r.text
    body = r.json()
    direct = index.search_text(text, k=k, target=target).to_dict()
    assert body["hits"] == public(direct["hits"])
    assert body["count"] == len(body["hits"]) == k and body["target"] == target and body["k"] == k
    assert body["query"] == direct["query"] and body["took_ms"] > 0
    assert [h["distance"] for h in body["hits"]] == sorted(h["distance"] for h in body["hits"])
    assert all(h["thumbnail"] and h["caption"] for h in body["hits"])


def test_text_search_defaults(client, index):
    body = client.post("/api/search/text", json={"text": "dog"}).json()
    assert body["k"] == 10 and body["target"] == "image"
    assert body["hits"] == public(index.search_text("dog", k=10).to_dict()["hits"])


def test_image_search_multipart_and_raw_equal_python_api(client, index):
    direct = index.search_image(PHOTO, k=8, target="text").to_dict()["hits"]
    with PHOTO.open("rb") as f:
        r = client.post("/api/search/image", files={"image": ("dog.jpg", f, "image/jpeg")}, data={"k": "8"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"] == public(direct)
    assert body["query"] == {"modality": "image", "image": "dog.jpg", "width": 640, "height": 426}
    raw = client.post("/api/search/image?k=5&target=image", content=PHOTO.read_bytes(),
                      headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["hits"] == public(index.search_image(PHOTO, k=5, target="image").to_dict()["hits"])
    assert raw.json()["hits"][0]["distance"] == 0  # the photo itself is indexed


def test_attention_png_and_json(client, index):
    photo = PHOTO.read_bytes()
    r = client.post("/api/attention", files={"image": ("dog.jpg", photo, "image/jpeg")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(r.content))
    assert overlay.size == (512, 341)  # the photo, at most 512 pixels a side
    j = client.post("/api/attention", files={"image": ("dog.jpg", photo, "image/jpeg")}, data={"format": "json"})
    assert j.status_code == 200, j.text
    want = index.attention(PHOTO)
    assert np.array_equal(np.array(j.json()["mask"]), want.mask)
    assert j.json()["grid"] == list(want.mask.shape) and 0 < j.json()["attended_fraction"] < 1
    # the overlay dims what lies outside the mask: the masked cells are brighter on average
    px = np.asarray(overlay.convert("L"), dtype=np.float32)
    cells = np.asarray(Image.fromarray(want.mask * 255).resize(overlay.size, Image.Resampling.NEAREST)) > 127
    base = np.asarray(Image.open(PHOTO).convert("L").resize(overlay.size), dtype=np.float32)
    assert px[cells].mean() / base[cells].mean() > 2 * px[~cells].mean() / base[~cells].mean()


def test_thumbnail(client, index):
    r = client.get("/api/thumbnail/3")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (128, 128)
    assert Image.open(io.BytesIO(client.get("/api/thumbnail/3?size=48").content)).size == (48, 48)
    assert_error(client.get("/api/thumbnail/159"), 404, "no row 159", "0..158")
    assert_error(client.get("/api/thumbnail/-1"), 404, "no row -1")
    assert_error(client.get("/api/thumbnail/3?size=4000"), 422, "size must be in 16..512")
    assert_error(client.get("/api/thumbnail/abc"), 422, "row")
    assert client.get(f"/api/thumbnail/3?id={quote(index.item(3)['id'], safe='')}").content == r.content
    assert_error(client.get("/api/thumbnail/3?id=nope"), 404, "row 3 no longer holds item 'nope'")


# --------------------------------------------------------------------------- limits and errors
def json_post(client, payload, **kw):
    return client.post("/api/search/text", json=payload, **kw)


@pytest.mark.parametrize("payload,status,needle", [
    ({"text": "   "}, 400, "empty query text"),
    ({"k": 3}, 422, "missing field 'text'"),
    ({"text": 42}, 422, "'text' must be a string"),
    ({"text": "dog " * 60}, 422, "the limit is 200"),
    ({"text": "dog", "k": 0}, 422, "k must be an integer in 1..50, got 0"),
    ({"text": "dog", "k": 51}, 422, "k must be an integer in 1..50, got 51"),
    ({"text": "dog", "k": "many"}, 422, "k must be an integer in 1..50"),
    ({"text": "dog", "k": True}, 422, "k must be an integer"),
    ({"text": "dog", "k": 2.5}, 422, "k must be an integer"),
    ({"text": "dog", "target": "video"}, 422, "target must be one of ['image', 'text']"),
    ({"text": "dog", "limit": 3}, 422, "unknown field(s) ['limit']"),
])
def test_text_request_errors(client, payload, status, needle):
    assert_error(json_post(client, payload), status, needle)


def test_unknown_words_answer_the_index_message(client, index):
    with pytest.raises(UnknownWordsError) as exc:
        index.search_text("zzqx qqwv")
    r = json_post(client, {"text": "zzqx qqwv"})
    assert_error(r, 422, "no word of the query is in the model's vocabulary", "'zzqx'")
    assert r.json()["error"] == str(exc.value)


@pytest.mark.parametrize("body,ctype,status,needle", [
    (b"", "application/json", 400, "empty request body"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 400, "must be a JSON object, got list"),
    (b"\xff\xfe", "application/json", 400, "not valid JSON"),
    (b"text=dog", "application/x-www-form-urlencoded", 415, "Content-Type 'application/x-www-form-urlencoded'"),
    (b'{"text": "dog"}', "text/plain", 415, "send a JSON body"),
    (b'{"text": "dog"}', None, 415, "Content-Type '(none)'"),
])
def test_text_body_errors(client, body, ctype, status, needle):
    headers = {"Content-Type": ctype} if ctype else {}
    assert_error(client.post("/api/search/text", content=body, headers=headers), status, needle)


def test_body_size_limit(client):
    big = b'{"text": "' + b"a" * 400_000 + b'"}'
    assert_error(client.post("/api/search/text", content=big, headers={"Content-Type": "application/json"}),
                 413, "over the limit of 300000 bytes")
    assert_error(client.post("/api/search/image", files={"image": ("x.png", b"0" * 400_000, "image/png")}),
                 413, "over the limit")

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"0" * 10_000

    assert_error(client.post("/api/search/image", content=chunks(), headers={"Content-Type": "image/png"}),
                 413, "over the limit of 300000 bytes")


@pytest.mark.parametrize("endpoint", ["/api/search/image", "/api/attention"])
def test_upload_errors(client, endpoint):
    good = PHOTO.read_bytes()
    assert_error(client.post(endpoint, files={"image": ("e.jpg", b"", "image/jpeg")}), 400, "empty upload")
    assert_error(client.post(endpoint, content=b"", headers={"Content-Type": "image/png"}), 400, "empty upload")
    assert_error(client.post(endpoint, files={"image": ("x.jpg", b"not an image at all", "image/jpeg")}), 400,
                 "could not decode the upload as an image: not a format PIL reads")
    assert_error(client.post(endpoint, files={"image": ("t.jpg", good[: len(good) // 3], "image/jpeg")}), 400,
                 "could not decode the upload as an image (OSError")
    assert_error(client.post(endpoint, files={"photo": ("x.jpg", good, "image/jpeg")}), 400,
                 "no file in the form field 'image'")
    assert_error(client.post(endpoint, data={"image": "x"}), 415, "multipart/form-data")
    assert_error(client.post(endpoint, json={"image": "x"}), 415, "Content-Type 'application/json'")
    assert_error(client.post(endpoint, files={"image": ("huge.png", png_of((2000, 1001)), "image/png")}), 413,
                 "2000x1001", "the limit is 2000000")


def test_image_search_param_errors(client):
    photo = PHOTO.read_bytes()
    assert_error(client.post("/api/search/image", files={"image": ("d.jpg", photo, "image/jpeg")}, data={"k": "0"}),
                 422, "k must be an integer in 1..50")
    assert_error(client.post("/api/search/image?target=audio", content=photo, headers={"Content-Type": "image/jpeg"}),
                 422, "target must be one of")
    assert_error(client.post("/api/attention", files={"image": ("d.jpg", photo, "image/jpeg")},
                             data={"format": "gif"}), 422, "format must be one of ['png', 'json']")


def test_unknown_paths_and_methods_are_json(client):
    assert_error(client.get("/api/nothing"), 404, "Not Found")
    assert_error(client.get("/api/search/text"), 405, "Method Not Allowed")


def test_limits_are_checked():
    with pytest.raises(AdahError, match="max_k must be a positive integer"):
        Limits(max_k=0)
    with pytest.raises(AdahError, match="default_k=20 is over max_k=5"):
        Limits(max_k=5, default_k=20)


# --------------------------------------------------------------------------- CLI
def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


def test_cli_errors_are_one_line(tmp_path, tmp_path_factory):
    runner = CliRunner()
    r = runner.invoke(cli_app, ["serve", "--index", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli_app, ["serve", "--index", str(tmp_path / "missing"), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "warning: listening on 0.0.0.0, not loopback" in r.output
    r = runner.invoke(cli_app, ["serve", "--index", str(tmp_path), "--log-level", "loud"])
    assert r.exit_code == 2 and "--log-level must be one of" in r.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        index = coco_index()
        r = runner.invoke(cli_app, ["serve", "--index", str(index), "--port", str(port)])
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.output, r.output


# --------------------------------------------------------------------------- a model without image attention
@pytest.fixture(scope="module")
def scenes_client(tmp_path_factory):
    """A 1-epoch scenes model whose attention is on text only; scenes' images live in arrays."""
    from adah.data.registry import make_split
    from adah.features.dataset import load_dataset
    from adah.index import build_index
    from adah.training.trainer import train

    from helpers import tiny_config

    base = tmp_path_factory.mktemp("scenes")
    cfg = tiny_config(**{"model.attention": "text", "data.num_items": 240, "data.num_query": 40,
                         "data.num_train": 160})
    data = load_dataset(cfg.data)
    train(cfg, data, make_split(cfg.data, len(data)), base / "run")
    build_index(base / "run" / "best.pt", base / "index", progress=False)
    with Index.load(base / "index") as ix, TestClient(create_app(ix)) as c:
        yield ix, c


@pytest.mark.slow
def test_index_without_image_files_or_image_attention(scenes_client):
    index, client = scenes_client
    body = client.post("/api/search/text", json={"text": "red circle", "k": 5}).json()
    assert body["hits"] == public(index.search_text("red circle", k=5).to_dict()["hits"])
    assert all(h["thumbnail"] is None for h in body["hits"])
    assert_error(client.get("/api/thumbnail/0"), 404, "row 0 has no image file")
    r = client.post("/api/attention", files={"image": ("q.png", png_of((64, 64)), "image/png")})
    assert_error(r, 422, "no image attention (model.attention='text')")
    r = client.post("/api/search/image", files={"image": ("q.png", png_of((64, 64)), "image/png")})
    assert r.status_code == 200 and r.json()["count"] == 10
