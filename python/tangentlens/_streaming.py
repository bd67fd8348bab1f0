"""Streaming over sample indices: rounds of batches, sharded over torch.distributed ranks, gathered,
checkpointed atomically, with progress and an optional early stop.

Used by the PPL engine and the spectra scan. The computation ``compute(start, count) -> {name: rows}``
must make row ``i`` a function of the sample index only (counter-based RNG), so that

* every round covers the contiguous index range ``[r * B * W, (r + 1) * B * W)`` (B = batch size,
  W = world size) and rank ``k`` computes the batch ``[.. + k * B, .. + (k + 1) * B)``: a run on W
  processes computes exactly the batches a single process does, so the rows are bit-identical;
* what is done is always a prefix ``[0, n)``: a checkpoint stores it, a restart computes the rest;
* the early stop is checked on fixed prefixes (multiples of ``check_every``) and the result is cut at
  the prefix that met it, so the stopping point does not depend on the batch size or the world size.

Checkpoints are ``torch.save`` files written to a temporary name, fsynced and renamed over the target
(atomic on POSIX), holding the configuration, the done prefix and a SHA-256 over both; loading uses
``weights_only=True`` and refuses a corrupted file or one written for another configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "StreamResult", "load_checkpoint", "save_checkpoint", "stream"]

FORMAT = "tangentlens-checkpoint"
FORMAT_VERSION = 1

Rows = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint that is corrupted, of another format, or written for another configuration."""


def _canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _checksum(config_json: str, done: int, rows: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(config_json.encode())
    h.update(str(done).encode())
    for name in sorted(rows):
        t = rows[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, config: Mapping[str, Any], done: int, rows: Rows) -> None:
    """Write ``rows`` (the prefix ``[0, done)``) atomically: temporary file, fsync, rename."""
    path = Path(path)
    config_json = _canonical(config)
    rows = {k: v.detach().cpu()[:done].contiguous() for k, v in rows.items()}
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config_json,
        "done": int(done),
        "rows": rows,
        "sha256": _checksum(config_json, done, rows),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch.load failed, in the checkpoint's terms (not torch.load's advice on unpickling)."""
    if not zipfile.is_zipfile(path):
        return "not a torch.save file (corrupted, truncated by an interrupted write, or another format)"
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
        return "it holds objects other than tensors and plain data: not a tangentlens checkpoint"
    return f"corrupted ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"


def load_checkpoint(path: str | os.PathLike, config: Mapping[str, Any]) -> tuple[int, Rows]:
    """``(done, rows)`` from a checkpoint written for ``config``; :class:`CheckpointError` otherwise."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse means the file is unusable
        raise CheckpointError(
            f"checkpoint {str(path)!r}: cannot be read: {_unreadable(path, exc)}; delete it (or give another "
            "checkpoint path) to start afresh"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r}: not a tangentlens checkpoint")
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: format version {payload.get('version')!r}, expected {FORMAT_VERSION}"
        )
    try:
        config_json, done, rows = str(payload["config"]), int(payload["done"]), dict(payload["rows"])
        ok = _checksum(config_json, done, rows) == payload["sha256"]
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {str(path)!r}: malformed ({exc})") from exc
    if not ok or any(v.shape[0] != done for v in rows.values()):
        raise CheckpointError(f"checkpoint {str(path)!r}: checksum mismatch, the file is corrupted")
    saved = json.loads(config_json)
    wanted = json.loads(_canonical(config))
    if saved != wanted:
        keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        diffs = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {wanted.get(k)!r}" for k in keys)
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for another configuration ({diffs}); "
            "use the same arguments to resume, or another checkpoint path"
        )
    return done, rows


def checkpoint_batch_size(path: str | os.PathLike) -> int | None:
    """The ``batch_size`` recorded in a checkpoint's configuration (None: no readable checkpoint there;
    :func:`load_checkpoint` reports what is wrong with it)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        value = json.loads(str(payload["config"])).get("batch_size")
    except Exception:  # noqa: BLE001 - absent or unreadable: the run's own load says so
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (itself without torch.distributed)."""
    rank, world = _dist()
    if world == 1:
        return value
    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, 0)
    return int(t.item())


@dataclass
class StreamResult:
    rows: Rows  # float tensors [num_done, ...] on the CPU
    num_done: int
    resumed_from: int  # rows taken from a checkpoint
    stopped_early: bool
    seconds: float


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_gather_json(obj: Any, device: torch.device) -> list[Any]:
    """Every rank's JSON-able ``obj``, sent as UTF-8 bytes in a tensor (no pickles between processes)."""
    dist = torch.distributed
    world = dist.get_world_size()
    data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(n) for n in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [json.loads(bytes(p[: int(n)].tolist()).decode()) for p, n in zip(parts, sizes, strict=True)]


def _layout(rows: Rows) -> dict[str, list[Any]]:
    return {k: [list(v.shape[1:]), str(v.dtype).removeprefix("torch.")] for k, v in rows.items()}


def _gather(rows: Rows | None, error: str | None, count: int, batch: int, device: torch.device) -> list[Rows]:
    """All ranks' rows (padded to ``batch`` for the collective), or raise if any rank failed. A rank with
    no rows (idle at the end of a short run) takes the row layout from rank 0, which always has work."""
    dist = torch.distributed
    world = dist.get_world_size()
    status = torch.tensor([0 if error is None else 1, count], dtype=torch.int64, device=device)
    statuses = [torch.empty_like(status) for _ in range(world)]
    dist.all_gather(statuses, status)
    if any(int(s[0]) for s in statuses):
        msgs = _all_gather_json(error, device)
        failed = [f"rank {r}: {m}" for r, m in enumerate(msgs) if m is not None]
        raise RuntimeError("a rank failed during the distributed run:\n" + "\n".join(failed))
    if any(int(s[1]) == 0 for s in statuses):
        layout = _all_gather_json(_layout(rows) if rows is not None else None, device)[0]
        if rows is None:
            rows = {
                k: torch.empty((0, *shape), dtype=getattr(torch, dt)) for k, (shape, dt) in layout.items()
            }
    assert rows is not None
    out: list[Rows] = [{} for _ in range(world)]
    for name in sorted(rows):
        x = rows[name].to(device)
        padded = torch.zeros((batch, *x.shape[1:]), dtype=x.dtype, device=device)
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        for r in range(world):
            out[r][name] = parts[r][: int(statuses[r][1])].cpu()
    return out


class _Progress:
    def __init__(self, total: int, initial: int, desc: str, enabled: bool, unit: str = "sample") -> None:
        self.bar = None
        self.unit = unit
        self.enabled = enabled
        self.total, self.n, self.t0, self.last = total, initial, time.perf_counter(), 0.0
        self.desc = desc
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr)
        except ImportError:  # plain text progress, at most every 2 s
            pass

    def update(self, n: int, postfix: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n - self.n)
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
        else:
            now = time.perf_counter()
            if now - self.last > 2.0 or n >= self.total:
                rate = (n - self.n) / max(now - self.t0, 1e-9)
                print(f"{self.desc}: {n}/{self.total} ({rate:.1f} {self.unit}s/s) {postfix}", file=sys.stderr)
                self.last = now
        self.n = n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def stream(
    compute: Callable[[int, int], Rows],
    *,
    num_samples: int,
    batch_size: int,
    config: Mapping[str, Any],
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    desc: str = "tangentlens",
    postfix: Callable[[Rows, int], str] | None = None,
    stop: Callable[[Rows, int], bool] | None = None,
    check_every: int = 1000,
    device: torch.device | str = "cpu",
    unverified: Sequence[str] = (),
    resume_unverified: bool = False,
    unit: str = "sample",
) -> StreamResult:
    """Run ``compute`` over the sample indices ``[0, num_samples)`` (module docstring).

    Args:
        compute: ``(start, count) -> {name: tensor [count, ...]}``; row i a function of index i only.
        config: everything that determines the rows (JSON-serialisable); a checkpoint must match it.
        checkpoint: a file to resume from (when it exists) and to write every ``checkpoint_every``
            seconds and at the end (rank 0 writes; all ranks read).
        stop: ``stop(rows, n) -> bool`` evaluated on the prefixes ``n = check_every, 2 * check_every, ...``
            (the rows cut to n); the run ends, cut at the first such n where it is true.
        device: where the collectives run (the NCCL backend needs CUDA tensors).
        unverified: what of the configuration could not be fingerprinted reliably (why, per item): a
            checkpoint is then resumed only with ``resume_unverified=True``.
        unit: what a row is, in the progress bar ("sample", "point").
    """
    t0 = time.perf_counter()
    rank, world = _dist()
    device = torch.device(device)
    if world > 1 and torch.distributed.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    done, resumed = 0, 0
    parts: Rows | None = None
    if checkpoint is not None and Path(checkpoint).exists():
        done, parts = load_checkpoint(checkpoint, config)
        if unverified and not resume_unverified:
            raise CheckpointError(
                f"checkpoint {str(checkpoint)!r}: cannot verify that it was written by the same run: "
                + "; ".join(unverified)
                + ". Resume it only if nothing changed: resume_unverified=True (CLI --resume-unverified); "
                "or delete it to start afresh"
            )
        done = min(done, num_samples)
        parts = {k: v[:done] for k, v in parts.items()}
        resumed = done
    chunks: dict[str, list[torch.Tensor]] = {k: [v] for k, v in (parts or {}).items()}

    def collected(n: int) -> Rows:
        for k, v in chunks.items():
            if len(v) > 1:
                chunks[k] = [torch.cat(v)]
        return {k: v[0][:n] for k, v in chunks.items()}

    bar = _Progress(num_samples, done, desc, progress and rank == 0, unit)
    last_save = last_postfix = time.perf_counter()
    next_check = (done // check_every + 1) * check_every if stop is not None else None
    stopped = False
    try:
        if stop is not None and done >= check_every and done > 0:
            # the stop may already hold on a checkpointed prefix (same rule as an uninterrupted run)
            for n in range(check_every, done + 1, check_every):
                if stop(collected(n), n):
                    done, stopped = n, True
                    break
        while done < num_samples and not stopped:
            start = done + rank * batch_size
            count = max(0, min(batch_size, num_samples - start))
            rows: Rows | None = None
            error: str | None = None
            try:
                rows = compute(start, count) if count > 0 else None
                if rows is not None:
                    rows = {k: v.detach().cpu() for k, v in rows.items()}
            except Exception as exc:
                if world == 1:
                    raise
                error = f"{type(exc).__name__}: {exc}"
            if world > 1:
                gathered = _gather(rows, error, count, batch_size, device)
            else:
                assert rows is not None
                gathered = [rows]
            for r in gathered:
                for k, v in r.items():
                    lst = chunks.setdefault(k, [])
                    lst.append(v)
                    if len(lst) > 256:  # bounded bookkeeping: fold the small batch tensors together
                        chunks[k] = [torch.cat(lst)]
            done = min(num_samples, done + world * batch_size)
            if next_check is not None:
                while next_check <= done:
                    if stop is not None and stop(collected(next_check), next_check):
                        done, stopped = next_check, True
                        break
                    next_check += check_every
            now = time.perf_counter()
            text = ""
            if (
                postfix is not None
                and rank == 0
                and bar.enabled
                and (now - last_postfix >= 1.0 or done >= num_samples)
            ):
                text = postfix(collected(done), done)  # O(n): at most once a second
                last_postfix = now
            bar.update(done, text)
            if checkpoint is not None and rank == 0 and (now - last_save >= checkpoint_every or stopped):
                save_checkpoint(checkpoint, config, done, collected(done))
                last_save = now
        final = collected(done)
        if checkpoint is not None and rank == 0 and done > resumed:
            save_checkpoint(checkpoint, config, done, final)
    finally:
        bar.close()
    return StreamResult(
        rows=final,
        num_done=done,
        resumed_from=resumed,
        stopped_early=stopped,
        seconds=time.perf_counter() - t0,
    )
