"""What one client can make `spm-gen serve` do is bounded: body bytes before they are read, image pixels before
decoding, and generations at once (a queue, then 503; per client, then 429; both with Retry-After), while
removals and /health stay fast."""

import io
import threading
import time

import pytest
from PIL import Image

from tests.tiny import tiny_pipeline

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

TOKEN = "t0ken-for-limits"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def app_for(tmp_path):
    from spm_gen.serving.app import create_app
    from spm_gen.serving.settings import ServeSettings

    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(folder)

    def make(**limits):
        return create_app(ServeSettings(str(folder), TOKEN, **limits))

    return make


def test_uploads_beyond_the_byte_limit_are_refused_and_nothing_is_removed(app_for):
    from fastapi.testclient import TestClient

    client = TestClient(app_for(max_upload_bytes=1000))
    big = {"images": ("big.png", b"\x89PNG" + b"\x00" * 5000)}
    response = client.post("/remove", headers=AUTH, files=big)
    assert response.status_code == 413 and "exceed 1000 bytes" in response.json()["error"]
    assert client.get("/health").json()["items"] == 24


def test_an_image_above_the_pixel_limit_is_refused_from_its_header(app_for):
    from fastapi.testclient import TestClient

    client = TestClient(app_for(max_image_pixels=64 * 64))
    bomb = png(4000, 4000)  # a few kB of zeros that decode to 16 megapixels
    assert len(bomb) < 100_000
    response = client.post("/remove", headers=AUTH, files={"similar_to": ("bomb.png", bomb)}, data={"threshold": "0.1"})
    assert response.status_code == 413 and "4000x4000 pixels" in response.json()["error"]
    junk = client.post("/remove", headers=AUTH, files={"images": ("junk.png", b"not an image")})
    assert junk.status_code == 400 and "not an image" in junk.json()["error"]


def test_bad_limits_are_named():
    from spm_gen.serving.settings import ServeSettings

    bad = (("max_upload_bytes", 0), ("max_concurrent_generations", -1), ("generation_queue", -1))
    for name, value in (*bad, ("max_generations_per_client", 0)):
        with pytest.raises(ValueError, match=name):
            ServeSettings("x", **{name: value})


def test_generations_beyond_the_queue_get_503_and_removals_and_health_stay_fast():
    """The gate alone, with real threads: 1 running, 1 waiting; the third is refused at once."""
    from fastapi import HTTPException

    from spm_gen.serving.limits import GenerationGate

    gate, release, inside = GenerationGate(1, 1), threading.Event(), []

    def generation():
        with gate.admit():
            inside.append(threading.get_ident())
            release.wait(10)

    threads = [threading.Thread(target=generation) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not inside and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(inside) == 1  # one runs, one waits
    start = time.monotonic()
    with pytest.raises(HTTPException) as refused:
        with gate.admit():
            pass
    assert refused.value.status_code == 503 and refused.value.headers == {"Retry-After": "1"}
    assert time.monotonic() - start < 0.5  # refused at once, not queued
    release.set()
    for t in threads:
        t.join(10)
    assert len(inside) == 2
    with gate.admit():  # the slots are free again
        pass


def test_the_server_answers_503_with_retry_after_when_its_queue_is_full(app_for, monkeypatch):
    from fastapi.testclient import TestClient

    app = app_for(max_concurrent_generations=1, generation_queue=0)
    served, release, started = app.state.served, threading.Event(), threading.Event()
    real = served.generate

    def slow(**kwargs):
        started.set()
        release.wait(20)
        return real(**kwargs)

    monkeypatch.setattr(served, "generate", slow)
    client = TestClient(app)
    body = {"class_labels": [1], "num_inference_steps": 1}
    first = threading.Thread(target=lambda: client.post("/generate", json=body))
    first.start()
    assert started.wait(20)
    busy = client.post("/generate", json=body)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
    start = time.monotonic()
    assert client.get("/health").status_code == 200
    removed = client.post("/remove", headers=AUTH, data={"ids": ["3"]})
    assert removed.status_code == 200 and time.monotonic() - start < 10  # not behind the generation
    release.set()
    first.join(30)


def test_remove_takes_json_and_an_unreadable_body_says_what_it_expects(app_for):
    from fastapi.testclient import TestClient

    client = TestClient(app_for())
    dry = client.post("/remove", headers=AUTH, json={"ids": ["3", "7"], "dry_run": True})
    assert dry.status_code == 200 and dry.json()["would_remove"] == ["3", "7"]
    done = client.post("/remove", headers=AUTH, json={"class": 2, "reason": "json"})
    assert done.status_code == 200 and done.json()["receipt"]["reason"] == "json"
    assert set(done.json()["receipt"]["labels"]) == {2}
    for body, headers, status in (
        ("ids=3", {"content-type": "text/plain"}, 415),
        ("{not json", {"content-type": "application/json"}, 422),
        ('{"idz": ["3"]}', {"content-type": "application/json"}, 422),
        ('{"ids": "3"}', {"content-type": "application/json"}, 422),
    ):
        response = client.post("/remove", headers={**AUTH, **headers}, content=body)
        assert response.status_code == status, response.text
        assert "expects json" in response.json()["error"] and "nothing to remove" not in response.json()["error"]
    assert client.get("/health").json()["items"] == 24 - 6  # class 2's six items, nothing else
    form = client.post("/remove", headers=AUTH, data={"ids": ["5"]})  # form fields still work
    assert form.status_code == 200 and form.json()["receipt"]["removed_ids"] == ["5"]


def test_a_body_above_its_limit_is_refused_before_it_is_read_and_chunked_bodies_too(app_for):
    """From Content-Length at once; a chunked body (no length) as soon as its bytes pass the limit."""
    from fastapi.testclient import TestClient

    from spm_gen.serving.limits import MAX_JSON_BYTES, MULTIPART_ENVELOPE

    client = TestClient(app_for(max_upload_bytes=1000))
    labels = {"class_labels": [1] * (MAX_JSON_BYTES // 2), "num_inference_steps": 1}
    huge = client.post("/generate", json=labels)
    assert huge.status_code == 413 and f"above {MAX_JSON_BYTES} bytes" in huge.json()["error"]

    def chunks():
        for _ in range(40):
            yield b"x" * 2**12

    body = {"content-type": "multipart/form-data; boundary=b"}
    streamed = client.post("/remove", headers={**AUTH, **body}, content=chunks())
    assert streamed.status_code == 413 and f"above {1000 + MULTIPART_ENVELOPE} bytes" in streamed.json()["error"]
    bad = client.post("/remove", headers={**AUTH, "content-length": "12x"}, content=b"{}")
    assert bad.status_code in (400, 413)
    assert client.get("/health").json()["items"] == 24
    small = client.post("/generate", json={"class_labels": [1], "num_inference_steps": 1})
    assert small.status_code == 200


def test_one_client_gets_429_beyond_its_share_while_another_is_admitted():
    from fastapi import HTTPException

    from spm_gen.serving.limits import GenerationGate

    gate = GenerationGate(running=4, waiting=4, per_client=1)
    with gate.admit("10.0.0.1"):
        with pytest.raises(HTTPException) as refused:
            with gate.admit("10.0.0.1"):
                pass
        assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "1"}
        with gate.admit("10.0.0.2"):  # another address is not refused
            pass
    with gate.admit("10.0.0.1"):  # its share is back once its generation ended
        pass
