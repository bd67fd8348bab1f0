"""Weight files tangentlens uses but does not ship: where each comes from, how it is found, verified and
downloaded (docs/lpips.md, "Where the weights come from").

Every file is registered once (:data:`REGISTRY`): its file name, the URLs its owner publishes it at, its
digest (a full SHA-256, or torchvision's hash prefix in the file name), its format and what uses it.

:func:`fetch` finds a file along the search order

1. (an explicit path, handled by the caller: it always wins and is used as given);
2. each directory in ``$TANGENTLENS_WEIGHTS`` (``os.pathsep``-separated) and its ``v0.1/`` subdirectory;
3. torch.hub's checkpoint cache, ``torch.hub.get_dir()/checkpoints`` (torchvision keeps its trunk files
   there; tangentlens downloads into it, the lpips files below ``lpips/v0.1/``);
4. the installed ``lpips`` package's ``weights/v0.1/`` and torchmetrics' bundled
   ``functional/image/lpips_models/`` (byte-identical files; found without importing either package);
5. for NVIDIA's ``vgg16.pt``, NVIDIA's own download cache (dnnlib: ``$DNNLIB_CACHE_DIR`` or
   ``~/.cache/dnnlib/downloads``);

and otherwise downloads it into torch.hub's cache: streamed to a temporary file next to the target, its
digest checked, renamed into place (a failed or interrupted transfer leaves nothing behind). Offline
(``$TANGENTLENS_OFFLINE=1`` or ``download=False``) nothing touches the network and the error names the files,
their URLs and where to put them.

Digests: SHA-256-pinned files (the lpips linear layers, a few KB) are checked on every load; torchvision's
trunk files by the hash prefix in their name when downloaded, as ``torch.hub`` does (and by
``tangentlens weights --list``); NVIDIA's ``vgg16.pt`` has no published digest: its structure (a TorchScript
archive holding at least VGG16's parameters) is checked when downloaded and loaded.

``$TANGENTLENS_WEIGHTS_MANIFEST`` names a JSON file that replaces the URLs and digests of registry entries
(a mirror of your own, or a test server): ``{"mirror": "http://host/dir/", "files": {"vgg16-linear":
{"urls": [...], "sha256": "..."}}}``; ``mirror`` fetches every file from ``<mirror><file name>``. Results
record that a manifest was in force.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ENV_MANIFEST",
    "ENV_OFFLINE",
    "ENV_WEIGHTS",
    "GROUPS",
    "REGISTRY",
    "Found",
    "WeightsDigestError",
    "WeightsDownloadError",
    "WeightsFile",
    "WeightsNotFoundError",
    "cache_dir",
    "download",
    "entry",
    "fetch",
    "fetch_all",
    "key_for_filename",
    "not_found_error",
    "locate",
    "offline",
    "override",
    "search_dirs",
    "verify",
]

ENV_WEIGHTS = "TANGENTLENS_WEIGHTS"
ENV_OFFLINE = "TANGENTLENS_OFFLINE"
ENV_MANIFEST = "TANGENTLENS_WEIGHTS_MANIFEST"

#: seconds a download waits for the server before giving up (per connection and per read)
TIMEOUT = 60.0

# lpips v0.1 linear layers: pinned to a commit of richzhang/PerceptualSimilarity; the digests are those of
# the files the `lpips` package (0.1.4) ships, byte-identical to the repository's at that commit and to
# torchmetrics' (1.9.0) bundled lpips_models/ files
LPIPS_COMMIT = "082bb24f84c091ea94de2867d34c4544f68e0963"
LPIPS_URL = (
    "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/{commit}/lpips/weights/v0.1/{file}"
)
NVIDIA_VGG16_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"
# VGG16's convolutions hold 14.7 M parameters: an archive with less tensor data (even in float16) is not it
VGG16_MIN_TENSOR_BYTES = 2 * 14_714_688


class WeightsNotFoundError(FileNotFoundError):
    """A weights file is not present (and was not downloaded); the message says which file, where it was
    looked for and how to get it. ``keys``: the registry keys missing; ``why``: why nothing was downloaded."""

    keys: tuple[str, ...] = ()
    why: str = ""


class WeightsDigestError(ValueError):
    """A weights file whose digest (or structure) is not the registered one; the message names the file,
    the expected and the found digest."""


class WeightsDownloadError(OSError):
    """A download that failed (network, HTTP status, truncated transfer); nothing was left in the cache."""


@dataclass(frozen=True)
class WeightsFile:
    """One registered file. ``sha256``: the full digest; ``hash_prefix``: torchvision's (the start of the
    SHA-256, also in the file name). ``min_tensor_bytes``: for TorchScript archives without a digest, the
    least tensor data the archive must hold."""

    key: str
    filename: str
    urls: tuple[str, ...]
    format: Literal["state_dict", "torchscript"]
    owner: str
    used_by: str
    sha256: str | None = None
    hash_prefix: str | None = None
    cache_subdir: str = ""
    packages: tuple[tuple[str, str], ...] = ()  # (package, directory inside it) searched for the file
    dnnlib_cache: bool = False
    min_tensor_bytes: int = 0

    @property
    def digest_kind(self) -> str:
        if self.sha256:
            return "sha256"
        if self.hash_prefix:
            return "sha256 prefix"
        return "structure"


def _linear(net: str, filename: str) -> WeightsFile:
    digests = {
        "vgg.pth": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        "alex.pth": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        "squeeze.pth": "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
    }
    return WeightsFile(
        key=f"{net}-linear",
        filename=filename,
        urls=(LPIPS_URL.format(commit=LPIPS_COMMIT, file=filename),),
        format="state_dict",
        owner=f"lpips v0.1 (richzhang/PerceptualSimilarity@{LPIPS_COMMIT[:7]})",
        used_by=f"LPIPS('{net}') linear layers",
        sha256=digests[filename],
        cache_subdir="lpips/v0.1",
        packages=(("lpips", "weights/v0.1"), ("torchmetrics", "functional/image/lpips_models")),
    )


def _trunk(net: str, filename: str, arch: str) -> WeightsFile:
    return WeightsFile(
        key=f"{net}-trunk",
        filename=filename,
        urls=(f"https://download.pytorch.org/models/{filename}",),
        format="state_dict",
        owner=f"torchvision ({arch}, ImageNet)",
        used_by=f"LPIPS('{net}') trunk",
        hash_prefix=filename.rsplit("-", 1)[1].split(".")[0],
    )


REGISTRY: dict[str, WeightsFile] = {
    e.key: e
    for e in (
        _trunk("vgg16", "vgg16-397923af.pth", "vgg16"),
        _trunk("alex", "alexnet-owt-7be5be79.pth", "alexnet"),
        _trunk("squeeze", "squeezenet1_1-b8a52dc0.pth", "squeezenet1_1"),
        _linear("vgg16", "vgg.pth"),
        _linear("alex", "alex.pth"),
        _linear("squeeze", "squeeze.pth"),
        WeightsFile(
            key="nvidia-vgg16",
            filename="vgg16.pt",
            urls=(NVIDIA_VGG16_URL,),
            format="torchscript",
            owner="NVIDIA stylegan2-ada-pytorch (metrics/perceptual_path_length.py)",
            used_by="the stylegan2 / stylegan2_crop PPL presets (NVIDIA's LPIPS, TorchScript)",
            cache_subdir="nvidia",
            dnnlib_cache=True,
            min_tensor_bytes=VGG16_MIN_TENSOR_BYTES,
        ),
    )
}

#: names ``tangentlens weights --download`` accepts besides the keys
GROUPS: dict[str, tuple[str, ...]] = {
    "lpips-vgg16": ("vgg16-trunk", "vgg16-linear"),
    "lpips-alex": ("alex-trunk", "alex-linear"),
    "lpips-squeeze": ("squeeze-trunk", "squeeze-linear"),
    "all": tuple(REGISTRY),
}

# in-process replacements of registry fields (tests; see override())
_OVERRIDES: dict[str, dict[str, Any]] = {}


@contextlib.contextmanager
def override(key: str, **fields: Any) -> Iterator[WeightsFile]:
    """Within the block, the registry entry ``key`` has ``fields`` replaced (e.g. ``urls=``, ``sha256=``):
    for tests and for mirrors set up in code. Yields the effective entry."""
    if key not in REGISTRY:
        raise KeyError(f"override: no registry entry {key!r} (known: {sorted(REGISTRY)})")
    saved = _OVERRIDES.get(key)
    _OVERRIDES[key] = {**(saved or {}), **fields}
    try:
        yield entry(key)
    finally:
        if saved is None:
            _OVERRIDES.pop(key, None)
        else:
            _OVERRIDES[key] = saved


def _manifest() -> tuple[str | None, dict[str, Any]]:
    """``(path, document)`` of ``$TANGENTLENS_WEIGHTS_MANIFEST`` (``(None, {})`` when unset)."""
    path = os.environ.get(ENV_MANIFEST)
    if not path:
        return None, {}
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"${ENV_MANIFEST}={path!r}: cannot be read as JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("files", {}), dict):
        raise ValueError(f"${ENV_MANIFEST}={path!r}: expected {{'mirror': URL, 'files': {{key: {{...}}}}}}")
    return path, doc


_MANIFEST_FIELDS = {"urls", "url", "sha256", "hash_prefix", "min_tensor_bytes"}


def entry(key: str) -> WeightsFile:
    """The registry entry ``key`` with the manifest's and the in-process overrides applied."""
    if key not in REGISTRY:
        raise KeyError(f"no weights file {key!r}; known: {', '.join(sorted(REGISTRY))}")
    e = REGISTRY[key]
    path, doc = _manifest()
    if path is not None:
        mirror = doc.get("mirror")
        if mirror:
            e = replace(e, urls=(str(mirror).rstrip("/") + "/" + e.filename,))
        changes = dict(doc.get("files", {}).get(key, {}))
        unknown = sorted(set(changes) - _MANIFEST_FIELDS)
        if unknown:
            raise ValueError(f"${ENV_MANIFEST}={path!r}: {key}: unknown fields {unknown}")
        if "url" in changes:
            changes["urls"] = [changes.pop("url")]
        if "urls" in changes:
            changes["urls"] = tuple(changes["urls"])
        e = replace(e, **changes)
    if key in _OVERRIDES:
        changes = dict(_OVERRIDES[key])
        if "urls" in changes:
            changes["urls"] = tuple(changes["urls"])
        e = replace(e, **changes)
    return e


def key_for_filename(filename: str) -> str | None:
    """The registry key of a file name (``"vgg.pth"`` -> ``"vgg16-linear"``), None if unregistered."""
    return next((k for k, e in REGISTRY.items() if e.filename == filename), None)


def offline() -> bool:
    """``$TANGENTLENS_OFFLINE`` set to 1 / true / yes / on."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir(e: WeightsFile | str) -> Path:
    """Where downloads of ``e`` go: ``torch.hub.get_dir()/checkpoints[/subdir]``."""
    import torch.hub

    e = entry(e) if isinstance(e, str) else e
    d = Path(torch.hub.get_dir()) / "checkpoints"
    return d / e.cache_subdir if e.cache_subdir else d


def _dnnlib_downloads() -> Path:
    """NVIDIA dnnlib's download cache (``make_cache_dir_path('downloads')``)."""
    if "DNNLIB_CACHE_DIR" in os.environ:
        return Path(os.environ["DNNLIB_CACHE_DIR"]) / "downloads"
    home = os.environ.get("HOME") or os.environ.get("USERPROFILE")
    if home:
        return Path(home) / ".cache" / "dnnlib" / "downloads"
    import tempfile

    return Path(tempfile.gettempdir()) / ".cache" / "dnnlib" / "downloads"


def search_dirs(e: WeightsFile | str) -> list[tuple[Path, str]]:
    """``(candidate file, where)`` in search order (module docstring), for an entry."""
    e = entry(e) if isinstance(e, str) else e
    out: list[tuple[Path, str]] = []
    for d in os.environ.get(ENV_WEIGHTS, "").split(os.pathsep):
        if d:
            out += [
                (Path(d) / e.filename, f"${ENV_WEIGHTS}"),
                (Path(d) / "v0.1" / e.filename, f"${ENV_WEIGHTS}"),
            ]
    out.append((cache_dir(e) / e.filename, "torch.hub cache"))
    for package, sub in e.packages:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                out.append((Path(loc) / sub / e.filename, f"the {package} package"))
    if e.dnnlib_cache:
        for url in e.urls:
            md5 = hashlib.md5(url.encode("utf-8")).hexdigest()
            name = url.rsplit("/", 1)[-1]
            out.append((_dnnlib_downloads() / f"{md5}_{name}", "NVIDIA's dnnlib cache"))
    return out


@dataclass
class Found:
    """A located file: its path, where it was found and, once checked, its verification."""

    key: str
    path: Path
    source: str
    verified: str | None = None  # "sha256", "sha256 prefix", "structure"; None: not checked on this load
    digest: str | None = None
    manifest: str | None = field(default_factory=lambda: os.environ.get(ENV_MANIFEST) or None)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.path.name, "path": str(self.path), "source": self.source}
        out["verified"] = self.verified or "not re-checked on load"
        if self.digest:
            out["sha256"] = self.digest
        if self.manifest:
            out["manifest"] = self.manifest
        return out


def locate(key: str) -> Found | None:
    """The first existing file along the search order, unverified; None if there is none."""
    for path, where in search_dirs(key):
        if path.is_file():
            return Found(key, path, where)
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _torchscript_problem(path: Path, min_tensor_bytes: int) -> str | None:
    """Why ``path`` is not a TorchScript archive holding at least ``min_tensor_bytes`` of tensor data
    (read from the zip directory only: nothing in it is run), None if it is."""
    if not zipfile.is_zipfile(path):
        return "not a zip archive (TorchScript files are; truncated or another format)"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1:
            return f"expected one archive root folder, found {sorted(roots)[:4]}"
        root = roots.pop()
        if f"{root}/data.pkl" not in names or not any(n.startswith(f"{root}/code/") for n in names):
            return "no data.pkl and code/ (not a TorchScript archive)"
        tensor_bytes = sum(i.file_size for i in z.infolist() if i.filename.startswith(f"{root}/data/"))
        bad = z.testzip()
    if bad is not None:
        return f"the archive member {bad!r} is corrupted"
    if tensor_bytes < min_tensor_bytes:
        return f"holds {tensor_bytes} bytes of tensors, fewer than VGG16's parameters ({min_tensor_bytes})"
    return None


def verify(path: Path | str, e: WeightsFile | str) -> tuple[bool, str, str | None]:
    """``(ok, what was checked, found sha256 or the structural problem)`` of a file against its entry."""
    e = entry(e) if isinstance(e, str) else e
    path = Path(path)
    if e.sha256 or e.hash_prefix:
        digest = sha256_of(path)
        want = e.sha256 or e.hash_prefix or ""
        return digest.startswith(want), e.digest_kind, digest
    if e.format == "torchscript":
        problem = _torchscript_problem(path, e.min_tensor_bytes)
        return problem is None, "structure", problem
    return True, "nothing to check", None


def _mismatch(
    e: WeightsFile, where: str, kind: str, found: str | None, downloaded: bool
) -> WeightsDigestError:
    """The error for a file that is not the registered one (``where``: its path or URL)."""
    if downloaded:
        fix = f"nothing was written to {cache_dir(e)}; the server does not serve the registered file"
    else:
        fix = "delete it (tangentlens downloads it again), or pass it explicitly to use it anyway"
    if kind == "structure":
        return WeightsDigestError(f"{e.filename} ({where}): not {e.owner}'s LPIPS module: {found}; {fix}")
    want = e.sha256 or e.hash_prefix
    return WeightsDigestError(
        f"{e.filename} ({where}): {kind} mismatch: expected {want}, found {found}. It is damaged or not "
        f"{e.owner}'s file; {fix}"
    )


def _how_to_get(keys: Sequence[str]) -> str:
    lines = []
    for key in keys:
        e = entry(key)
        lines.append(f"{e.filename} ({e.used_by}) from {e.urls[0]} into {cache_dir(e)}")
    return "; ".join(lines)


def not_found_error(
    keys: Sequence[str], why: str, explicit: str | None = None, preface: str = ""
) -> WeightsNotFoundError:
    """The error for files that are neither present nor downloadable now: which files, every place looked,
    and how to put them in place."""
    looked = []
    for key in keys:
        looked += [str(p.parent) for p, _ in search_dirs(key)]
    looked = list(dict.fromkeys(looked))
    names = ", ".join(repr(entry(k).filename) for k in keys)
    how = (
        f"run `tangentlens weights --download {' '.join(keys)}` where the network is reachable, or "
        f"download {_how_to_get(keys)}; or put them in a directory named in ${ENV_WEIGHTS}"
    )
    if explicit:
        how += f", or pass the files explicitly ({explicit})"
    err = WeightsNotFoundError(
        f"{preface}weights {names} not found ({why}). Looked in: {', '.join(looked)}. To fix: {how}."
    )
    err.keys, err.why = tuple(keys), why
    return err


def _offline_reason(download: bool | None) -> str | None:
    """Why nothing may be downloaded now (None: downloads are allowed)."""
    if offline():
        return f"offline: ${ENV_OFFLINE} is set, nothing was downloaded"
    if download is False:
        return "offline: download=False, nothing was downloaded"
    return None


def fetch_all(
    keys: Sequence[str],
    *,
    download: bool | None = None,
    progress: bool = True,
    explicit: str | None = None,
) -> list[Found]:
    """:func:`fetch` of several files; offline, one error naming every missing one."""
    reason = _offline_reason(download)
    if reason is not None:
        missing = [k for k in keys if locate(k) is None]
        if missing:
            raise not_found_error(missing, reason, explicit)
    return [fetch(k, download=download, progress=progress, explicit=explicit) for k in keys]


def fetch(
    key: str,
    *,
    download: bool | None = None,
    progress: bool = True,
    explicit: str | None = None,
) -> Found:
    """The file ``key``, found along the search order or downloaded into torch.hub's cache.

    ``download``: None downloads unless ``$TANGENTLENS_OFFLINE`` is set; False never touches the network.
    ``explicit``: how the caller's user passes the file by hand (named in the not-found message).
    Raises :class:`WeightsNotFoundError` (absent, offline), :class:`WeightsDownloadError` (the transfer
    failed) or :class:`WeightsDigestError` (a found or downloaded file that is not the registered one)."""
    e = entry(key)
    found = locate(key)
    if found is not None:
        # small pinned files and TorchScript structure on every load; trunk prefixes at download
        if e.sha256 or e.format == "torchscript":
            ok, kind, detail = verify(found.path, e)
            if not ok:
                raise _mismatch(e, f"found in {found.source}: {found.path}", kind, detail, False)
            found.verified, found.digest = kind, detail if kind != "structure" else None
        return found
    reason = _offline_reason(download)
    if reason is not None:
        raise not_found_error([key], reason, explicit)
    path, digest = download_file(key, progress=progress)
    return Found(key, path, "downloaded", verified=e.digest_kind, digest=digest)


def download(key: str, *, progress: bool = True, force: bool = False) -> Path:
    """Download ``key`` into torch.hub's cache (unless present there already, or ``force``); the path."""
    target = cache_dir(key) / entry(key).filename
    if target.is_file() and not force:
        return target
    if offline():
        raise not_found_error([key], f"offline: ${ENV_OFFLINE} is set, nothing was downloaded")
    return download_file(key, progress=progress)[0]


class _Bar:
    """Download progress on stderr: tqdm (bytes) when installed, else a line every 2 s."""

    def __init__(self, name: str, total: int | None, enabled: bool) -> None:
        self.enabled, self.name, self.total, self.n, self.last = enabled, name, total, 0, 0.0
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"downloading {name}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
            )
        except ImportError:
            print(f"downloading {name} ({total or '?'} bytes)", file=sys.stderr)

    def update(self, n: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last > 2.0:
            self.last = time.monotonic()
            print(f"downloading {self.name}: {self.n} / {self.total or '?'} bytes", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def download_file(key: str, *, progress: bool = True) -> tuple[Path, str]:
    """Download ``key`` from its URLs (in order, the next after a network failure) into torch.hub's cache;
    ``(path, sha256)``. The bytes go to a temporary file next to the target that is renamed into place
    only after the whole transfer arrived and its digest (or structure) checked out."""
    import tangentlens

    e = entry(key)
    target_dir = cache_dir(e)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / e.filename
    failures = []
    for url in e.urls:
        tmp = target_dir / f".{e.filename}.{uuid.uuid4().hex}.partial"
        try:
            request = urllib.request.Request(
                url, headers={"User-Agent": f"tangentlens/{tangentlens.__version__}"}
            )
            h = hashlib.sha256()
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                bar = _Bar(e.filename, total, progress)
                received = 0
                try:
                    with open(tmp, "wb") as f:
                        for chunk in iter(lambda: response.read(1 << 16), b""):
                            f.write(chunk)
                            h.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                        f.flush()
                        os.fsync(f.fileno())
                finally:
                    bar.close()
            if total is not None and received != total:
                raise WeightsDownloadError(
                    f"{e.filename}: the transfer from {url} stopped after {received} of {total} bytes"
                )
            digest = h.hexdigest()
            want = e.sha256 or e.hash_prefix
            if want and not digest.startswith(want):
                raise _mismatch(e, f"downloaded from {url}", e.digest_kind, digest, True)
            if e.format == "torchscript" and not (e.sha256 or e.hash_prefix):
                problem = _torchscript_problem(tmp, e.min_tensor_bytes)
                if problem is not None:
                    raise _mismatch(e, f"downloaded from {url}", "structure", problem, True)
            os.replace(tmp, target)
            return target, digest
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, truncation
            code = getattr(exc, "code", None)
            why = getattr(exc, "reason", None) or exc
            failures.append(f"{url}: {f'HTTP {code} ' if isinstance(code, int) else ''}{why}")
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    raise WeightsDownloadError(
        f"{e.filename} ({e.used_by}) could not be downloaded ({'; '.join(failures)}); nothing was written to "
        f"{target_dir}. Download it by hand from {e.urls[0]} into {target_dir} (or a directory named in "
        f"${ENV_WEIGHTS}), or set ${ENV_OFFLINE}=1 to stop trying"
    )
