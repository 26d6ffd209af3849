"""`spm-gen serve` as a client sees it: a real server process on a free loopback port, a tiny saved SPM, httpx."""

import io
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from spm_gen import MemoryBank
from spm_gen.cli import main
from tests.tiny import tiny_pipeline

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder, token: str | None = TOKEN) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "SPM_GEN_TOKEN"}
        if token is not None:
            env["SPM_GEN_TOKEN"] = token
        command = [sys.executable, "-m", "spm_gen.cli", "serve", str(folder), "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not start: {self.process.stdout.read()}")

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("served") / "model"
    tiny_pipeline().save_pretrained(path)  # 24 items, classes 0-3 (item i has class i % 4)
    return path


@pytest.fixture(scope="module")
def server(folder):
    server = Server(folder)
    yield server
    server.stop()


def _generate(server, labels, **extra) -> dict:
    response = server.client.post("/generate", json={"class_labels": labels, "num_inference_steps": 2, **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_generate_returns_pngs_and_the_memory_each_sample_read(server):
    out = _generate(server, [0, 1, 2], seed=3)
    assert len(out["images"]) == 3 and len(out["memory_ids"]) == 3
    image = Image.open(io.BytesIO(__import__("base64").b64decode(out["images"][0])))
    assert image.size == (8, 8)
    assert out == _generate(server, [0, 1, 2], seed=3)  # seeded
    grid = server.client.post("/generate", json={"class_labels": [0, 1], "num_inference_steps": 1, "format": "png"})
    assert grid.headers["content-type"] == "image/png" and "x-memory-ids" in grid.headers
    assert server.client.get("/openapi.json").json()["info"]["title"] == "spm-gen"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"class_labels": [0, 9]}, 400, "class_labels must be in [0, 4), got [9]"),
        ({"class_labels": "x"}, 422, "class_labels: Input should be a valid list, got 'x'"),
        ({"class_labels": [0], "num_inference_steps": 0}, 422, "num_inference_steps: Input should be greater than"),
        ({"class_labels": [0], "format": "gif"}, 422, "format: Input should be 'json' or 'png', got 'gif'"),
        ({"class_labels": [0] * 300}, 400, "at most 256 samples per request, got 300"),
    ],
)
def test_bad_generation_input_is_one_line_and_the_server_lives_on(server, body, status, message):
    response = server.client.post("/generate", json=body)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert "\n" not in response.json()["error"]
    assert server.client.get("/health").status_code == 200


@pytest.mark.slow
def test_removal_and_receipts_need_the_token(server):
    assert server.client.post("/remove", data={"ids": "1"}).status_code == 401
    wrong = server.client.get("/receipts", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
    assert "1" in _ids_read(server, 1)


def _ids_read(server, label: int) -> set[str]:
    return set(_generate(server, [label], num_inference_steps=1)["memory_ids"][0])


@pytest.mark.slow
def test_a_removal_reaches_the_next_generation_and_its_receipt_is_served(server, folder):
    assert {"4", "8"} <= _ids_read(server, 0)
    dry = server.client.post("/remove", headers=AUTH, data={"ids": ["4"], "dry_run": "true"})
    assert dry.json() == {"dry_run": True, "would_remove": ["4"], "labels": [0]} and "4" in _ids_read(server, 0)
    response = server.client.post("/remove", headers=AUTH, data={"ids": ["4", "8"], "reason": "request #7"})
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["receipt"]["removed_ids"] == ["4", "8"] and receipt["receipt"]["reason"] == "request #7"
    assert not {"4", "8"} & _ids_read(server, 0)  # every generation after the response
    assert server.client.get("/health").json()["bank_version"] == receipt["receipt"]["version_after"]
    listed = server.client.get("/receipts", headers=AUTH).json()
    assert receipt["receipt_file"] in [r["name"] for r in listed]
    served = server.client.get(f"/receipts/{receipt['receipt_file']}", headers=AUTH).json()
    assert served["removed_ids"] == ["4", "8"] and os.path.isdir(folder / "receipts")
    assert server.client.get("/receipts/..%2Fmodel_index", headers=AUTH).status_code == 404
    again = server.client.post("/remove", headers=AUTH, data={"ids": ["4"]})
    assert again.status_code == 400 and "already removed" in again.json()["error"]
    unknown = server.client.post("/remove", headers=AUTH, data={"ids": ["nope"]})
    assert unknown.status_code == 400 and "Unknown ids" in unknown.json()["error"]


@pytest.mark.slow
def test_an_uploaded_image_removes_its_item_by_content(server, folder):
    image = MemoryBank.from_pretrained(folder / "memory_bank").get_images(["13"])[0]
    buffer = io.BytesIO()
    Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy()).save(buffer, format="PNG")
    response = server.client.post("/remove", headers=AUTH, files={"images": ("mine.png", buffer.getvalue())})
    assert response.status_code == 200 and response.json()["receipt"]["removed_ids"] == ["13"], response.text
    assert "13" not in _ids_read(server, 1)


@pytest.mark.slow
def test_a_cli_removal_and_another_server_over_the_folder_are_seen_by_the_next_request(server, folder):
    assert "6" in _ids_read(server, 2)
    assert main(["remove", str(folder), "--ids", "6"]) == 0
    assert "6" not in _ids_read(server, 2)
    other = Server(folder)
    try:
        assert other.client.post("/remove", headers=AUTH, data={"class": "3"}).status_code == 200
        assert server.client.get("/health").json()["items"] == other.client.get("/health").json()["items"]
        assert not any(int(i) % 4 == 3 for i in _ids_read(server, 1) | _ids_read(server, 2))
        fallback = _generate(server, [3], num_inference_steps=1)["memory_ids"][0]  # class 3 is empty: reads all
        assert fallback and not any(int(i) % 4 == 3 for i in fallback)
    finally:
        other.stop()


@pytest.mark.slow
def test_without_a_token_removal_is_refused_with_a_clear_message(folder):
    server = Server(folder, token=None)
    try:
        refused = server.client.post("/remove", data={"ids": "1"})
        assert refused.status_code == 403 and "no token configured (set SPM_GEN_TOKEN)" in refused.json()["error"]
        assert server.client.get("/receipts").status_code == 403
    finally:
        server.stop()


def test_serve_checks_its_arguments_before_loading_anything(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    assert "is not a saved pipeline (no model_index.json); pass an SPM pipeline folder" in capsys.readouterr().out


def _png_of(folder, item: str) -> bytes:
    image = MemoryBank.from_pretrained(folder / "memory_bank").get_images([item])[0]
    buffer = io.BytesIO()
    Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_in_process_similar_to_verify_and_a_protected_generation(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from spm_gen.serving.app import create_app
    from spm_gen.serving.settings import ServeSettings, read_token

    folder = tmp_path / "model"
    tiny_pipeline().save_pretrained(folder)
    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.setenv("SPM_GEN_TOKEN", "not-this-one")
    assert read_token(str(tmp_path / "token")) == TOKEN  # the file wins over the environment
    client = TestClient(create_app(ServeSettings(str(folder), TOKEN, protect_generate=True)))
    body = {"class_labels": [2], "num_inference_steps": 1}
    assert client.post("/generate", json=body).status_code == 401
    assert client.post("/generate", json=body, headers=AUTH).status_code == 200
    files = {"similar_to": ("near.png", _png_of(folder, "10"))}
    data = {"threshold": "0.001", "verify": "true", "verify_samples": "2"}
    response = client.post("/remove", headers=AUTH, files=files, data=data)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["receipt"]["removed_ids"] == ["10"] and [i["id"] for i in out["verification"]["items"]] == ["10"]
    stored = client.get(f"/receipts/{out['receipt_file']}", headers=AUTH).json()
    assert stored["verification"]["settings"]["samples"] == 2  # written into the receipt file, as the CLI does
    none = client.post("/remove", headers=AUTH, files={"similar_to": ("far.png", _png_of(folder, "2"))})
    assert none.status_code == 400 and "needs --threshold" in none.json()["error"]
