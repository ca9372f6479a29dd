import http.server
import threading

import pytest
from torchvision.datasets import CIFAR10

from vislab.models import registered_models


def test_models_lists_every_registered_model_with_its_size(cli):
    result = cli("models")
    assert result.code == 0
    listed = {line.split()[0]: line.split()[1] for line in result.out.splitlines()[1:] if line[:1].isalpha()}
    # vislab's own models (a test before may have registered a user's, named by a path).
    assert {name for name, entry in registered_models().items() if entry.builtin} <= set(listed)
    assert listed["resnet20"] == "272,474" and "timm:<name>" in result.out


def test_datasets_says_what_is_on_disk(cli, tmp_path):
    result = cli("datasets", f"data_dir={tmp_path}")
    lines = {line.split()[0]: line for line in result.out.splitlines()}
    assert result.code == 0 and "present" in lines["digits"] and "not downloaded" in lines["cifar10"]


@pytest.fixture
def wrong_file_server():
    """A local HTTP server that answers every download with bytes that fail the checksum."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"this is not the CIFAR archive"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    server.shutdown()


def test_a_download_that_fails_its_checksum_is_a_one_line_error(
    cli, tmp_path, monkeypatch, wrong_file_server
):
    monkeypatch.setattr(CIFAR10, "url", wrong_file_server)
    result = cli("train", "data=cifar10", f"data_dir={tmp_path}", f"runs_dir={tmp_path / 'runs'}")
    assert result.code == 2 and "Traceback" not in result.err
    assert "100%" in result.err  # the download showed its progress
    assert result.err.strip().splitlines()[-1].startswith("vislab: error: could not get CIFAR10 into")
    assert not (tmp_path / "runs").exists()
