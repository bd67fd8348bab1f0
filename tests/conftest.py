import pytest
import torch

import tangentlens

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
requires_native = pytest.mark.skipif(not tangentlens.NATIVE_AVAILABLE, reason="compiled extension not built")

ALL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

# Tolerances of a result computed in float64 and rounded once to the dtype (about one ulp).
ULP_TOL = {
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=8e-3, atol=8e-3),
    torch.float32: dict(rtol=2e-7, atol=2e-7),
    torch.float64: dict(rtol=1e-13, atol=1e-13),
}


# ---- weights: no test touches the network; downloads are served by a local server -------------------------


@pytest.fixture(autouse=True, scope="session")
def _offline_weights():
    """Every test runs offline ($TANGENTLENS_OFFLINE=1, inherited by the subprocesses tests start): missing
    weights never turn into a download from the real hosts. Download tests unset it with their server."""
    import os

    saved = os.environ.get("TANGENTLENS_OFFLINE")
    os.environ["TANGENTLENS_OFFLINE"] = "1"
    yield
    if saved is None:
        os.environ.pop("TANGENTLENS_OFFLINE", None)
    else:
        os.environ["TANGENTLENS_OFFLINE"] = saved


class WeightsServer:
    """An HTTP server on 127.0.0.1 serving test-written files at the URL paths of the registry's hosts
    (``https://host/a/b.pth`` is served at ``http://127.0.0.1:PORT/a/b.pth``). ``files[path] = bytes``;
    ``truncate[path] = n`` sends the full Content-Length but only n bytes, then closes; ``requests`` lists
    every path asked for."""

    def __init__(self) -> None:
        import http.server
        import threading

        server = self
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.truncate.get(self.path)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url_for(self, url: str) -> str:
        """The local URL standing in for a registry URL (same path)."""
        from urllib.parse import urlparse

        return self.base + urlparse(url).path

    def serve(self, key: str, body: bytes, **registry_fields: object):
        """Serve ``body`` at the path of registry entry ``key``'s URL and point the entry there (with
        ``registry_fields`` replaced, e.g. the digest of the test-written file); a context manager."""
        from urllib.parse import urlparse

        from tangentlens import weights

        url = weights.REGISTRY[key].urls[0]
        self.files[urlparse(url).path] = body
        return weights.override(key, urls=(self.url_for(url),), **registry_fields)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def weights_server(monkeypatch, tmp_path):
    """A WeightsServer, downloads allowed, torch.hub's cache and every other search place isolated."""
    import torch

    monkeypatch.delenv("TANGENTLENS_OFFLINE", raising=False)
    monkeypatch.delenv("TANGENTLENS_WEIGHTS", raising=False)
    monkeypatch.delenv("TANGENTLENS_WEIGHTS_MANIFEST", raising=False)
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path / "dnnlib"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    server = WeightsServer()
    yield server
    server.close()


class NvidiaLikeLPIPS(torch.nn.Module):
    """A small module with the interface of NVIDIA's vgg16.pt (0..255 images in, a flat LPIPS embedding out)
    on one random conv layer: TorchScript it and save it where a test needs a ``vgg16.pt``."""

    def __init__(self, channels: int = 8, seed: int = 11) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(channels, 3, 3, 3, generator=g))
        self.register_buffer("lin", torch.rand(channels, generator=g))

    def forward(
        self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False
    ) -> torch.Tensor:
        f = torch.nn.functional.relu(torch.nn.functional.conv2d(img / 127.5 - 1.0, self.weight, padding=1))
        f = f / (torch.sqrt((f * f).sum(1, keepdim=True)) + 1e-10)
        return (torch.sqrt(self.lin.view(1, -1, 1, 1) / (f.shape[2] * f.shape[3])) * f).flatten(1)
