"""The streaming loop under torch.distributed (gloo, 2 processes): an idle rank gets the row layout from
rank 0 without computing anything, and a failing rank's error reaches every rank (JSON, no pickles)."""

from __future__ import annotations

import pytest
import torch

from tangentlens._streaming import stream


def _rows(start: int, count: int) -> dict[str, torch.Tensor]:
    i = torch.arange(start, start + count, dtype=torch.float64)
    return {"a": i.square(), "b": torch.stack([i, -i, i + 0.5], dim=1).to(torch.float32).reshape(count, 3, 1)}


def _worker(rank: int, world: int, init: str, out: str, num_samples: int, fail: bool) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    calls: list[tuple[int, int]] = []

    def compute(start: int, count: int) -> dict[str, torch.Tensor]:
        calls.append((start, count))
        if fail and rank == 1:
            raise ValueError("sample 5: generator returned NaN")
        return _rows(start, count)

    try:
        res = stream(compute, num_samples=num_samples, batch_size=4, config={}, progress=False)
        torch.save({"rows": res.rows, "calls": calls}, f"{out}.{rank}")
    except RuntimeError as exc:
        torch.save({"error": str(exc), "calls": calls}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def _spawn(tmp_path, num_samples: int, fail: bool = False) -> list[dict]:
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rdzv'}"
    out = str(tmp_path / "res")
    args = (2, init, out, num_samples, fail)
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="spawn")
    return [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_idle_rank_takes_the_layout_and_computes_nothing(tmp_path) -> None:
    ranks = _spawn(tmp_path, num_samples=3)  # one round: rank 0 computes [0, 3), rank 1 has nothing
    single = stream(_rows, num_samples=3, batch_size=4, config={}, progress=False).rows
    assert ranks[0]["calls"] == [(0, 3)] and ranks[1]["calls"] == []
    for r in ranks:
        assert sorted(r["rows"]) == ["a", "b"]
        for k, v in single.items():
            assert r["rows"][k].dtype == v.dtype and torch.equal(r["rows"][k], v)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_a_failing_rank_stops_every_rank_with_its_message(tmp_path) -> None:
    ranks = _spawn(tmp_path, num_samples=6, fail=True)
    for r in ranks:
        assert "rank 1: ValueError: sample 5: generator returned NaN" in r["error"]
        assert "rank 0" not in r["error"]
