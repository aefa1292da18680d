"""Beyond one process: the G-BAIR job over ``torch.distributed`` (torchrun, accelerate launch), sharded and exact.

``torchrun --nproc_per_node N -m gbair_nb recover …`` starts N copies of the same command. Inside :func:`job` each
copy joins one process group (gloo on CPU, nccl on GPU) and the work is split so that the result equals the
single-process run — same flagged ids in the same order, metrics equal up to the order of float sums:

- **training** (data parallel): every rank walks the same shuffled batches (same seed) and takes its own rows of each
  batch; the gradients of the trainable tensors (a few thousand numbers for prompt tuning) are summed over ranks
  after ``backward``, each rank's mean loss weighted by its share of rows, so every rank holds the gradient of the
  *global* batch mean and takes the same optimizer step. One ``all_reduce`` per step, no ``DistributedDataParallel``
  wrapper: DDP's bucketing and overlap pay off for millions of parameters, not for a soft prompt, and a plain
  reduce keeps the model an ordinary peft model. Dropout draws the mask of the *whole* batch on every rank and
  keeps its own rows, so the random masks are the single-process ones too.
- **scoring** (the per-example gradient pass): each rank scores a contiguous slice of the training set and the
  scores are gathered in order. For G-BAIR each rank also sums the gradients of its slice of the validation
  mistakes and the summed vector is all-reduced. Every rank then ranks the same full score vector, so every rank
  flags the same ids in the same order. ``top_influences`` gathers each rank's top k and keeps the best k.
- **evaluation** (forward passes on validation and test) runs on every rank: it is cheap and it keeps the ranks in
  step without more messages.
- **writing**: only rank 0 writes, and only after every rank has finished and agreed on the flagged ids. A rank
  that fails publishes its error to the process group's store; rank 0 prints it and the job ends non-zero with no
  report.

Nothing here runs at import time and nothing here replaces anything elsewhere: :func:`job` gives the loop a
:class:`~gbair_nb.loop.Compute` value (``job.compute``) with the data-parallel training step and this module's
sharded TracIn functions, which the loop's scorers call through ``ctx.influence``. Outside torchrun/accelerate
:func:`job` is a no-op, ``job.compute`` is the single-process one, and the helpers act on one process.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

__all__ = ["DistributedError", "Job", "job", "launched", "backend", "rank", "world_size", "is_active", "part",
           "gather", "all_reduce_sum", "self_influence", "aggregated_influence", "top_influences",
           "per_example_grads", "forward_backward", "FAIL_ENV", "TIMEOUT_ENV"]

FAIL_ENV = "GBAIR_DIST_FAIL_RANK"  # test hook: this rank raises at its 3rd training step
TIMEOUT_ENV = "GBAIR_DIST_TIMEOUT"  # seconds a collective may wait for a silent rank (default 1800)
BACKEND_ENV = "GBAIR_DIST_BACKEND"  # force "gloo" or "nccl"


class DistributedError(RuntimeError):
    """The job across processes could not go on: a rank failed or the ranks disagree."""


# ------------------------------------------------------------------------------------------------- the world
def launched() -> bool:
    """Whether this process was started as one of several by torchrun / accelerate launch (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_active() -> bool:
    """Whether a process group of more than one process is up."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when alone)."""
    import torch.distributed as dist

    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """Number of processes in the job (1 when alone)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_active() else 1


def backend() -> str:
    """The backend a new job uses: ``nccl`` when this machine has a GPU for each of its processes, else ``gloo``;
    ``$GBAIR_DIST_BACKEND`` overrides.

    nccl needs one GPU per process, so two processes on a one-GPU machine (a laptop running the course's
    ``torchrun --nproc_per_node 2``) use gloo: both compute on that GPU and exchange gradients through the CPU.
    With ``GBAIR_DEVICE=cpu`` (:func:`gbair_nb.config.device`) the GPUs are not used, so gloo.
    """
    from .config import device

    gpus = torch.cuda.device_count() if device() == "cuda" else 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        if forced not in ("gloo", "nccl"):
            raise ValueError(f"{BACKEND_ENV}={forced!r}; use 'gloo' (CPU) or 'nccl' (GPU)")
        if forced == "nccl" and gpus < local:
            raise ValueError(f"{BACKEND_ENV}=nccl needs one GPU per process: {local} processes on this machine, "
                             f"{gpus} GPU(s); start fewer (--nproc_per_node {max(gpus, 1)}) or use gloo")
        return forced
    return "nccl" if gpus >= max(local, 1) else "gloo"


def _comm_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def part(n: int, *, r: int | None = None, world: int | None = None) -> slice:
    """This rank's contiguous block of ``n`` items: ``slice(n·r // W, n·(r+1) // W)`` (sizes differ by at most 1).

    Concatenating every rank's block in rank order gives ``range(n)`` back, which is how :func:`gather` restores
    the single-process order.
    """
    r = rank() if r is None else r
    world = world_size() if world is None else world
    return slice(n * r // world, n * (r + 1) // world)


def gather(local: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """Concatenate every rank's block (rank order) into the full (n, …) array, on every rank.

    ``local`` holds this rank's rows ``part(n)``. Alone, ``local`` is returned as an array.
    """
    local = torch.as_tensor(np.ascontiguousarray(local) if isinstance(local, np.ndarray) else local)
    if not is_active():
        return local.numpy()
    import torch.distributed as dist

    world = world_size()
    sizes = [part(n, r=r, world=world) for r in range(world)]
    sizes = [s.stop - s.start for s in sizes]
    if local.shape[0] != sizes[rank()]:
        raise DistributedError(f"rank {rank()} holds {local.shape[0]} rows; its part of {n} is {sizes[rank()]}")
    dev = _comm_device()
    padded = torch.zeros((max(sizes),) + tuple(local.shape[1:]), dtype=local.dtype, device=dev)
    padded[:local.shape[0]] = local.to(dev)
    bufs = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded)
    return torch.cat([b[:s] for b, s in zip(bufs, sizes)]).cpu().numpy()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``t`` over ranks (a new tensor on ``t``'s device); ``t`` itself when alone."""
    if not is_active():
        return t
    import torch.distributed as dist

    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


# ------------------------------------------------------------------------------------------ data-parallel step
_steps_taken = 0


def forward_backward(model, batch: dict) -> float:
    """One data-parallel training step's gradients: the same contract — and the same floats — as
    :func:`gbair_nb.train.forward_backward`.

    The batch's fixed micro-batches (:func:`gbair_nb.train.micro_batches`) are shared out, a contiguous block per
    rank; each rank computes its micro-batches' gradients (dropout masks of the whole batch, from the batch's random
    state), every micro-batch's gradient is gathered on every rank, and each rank adds them in micro-batch order —
    exactly the additions one process makes. So every rank holds the single-process gradient bit for bit and takes
    the same optimizer step. The random state then continues from the rank that did the last micro-batch (a rank
    with nothing to do drew no masks).
    """
    from .train import micro_batches, micro_gradient, rng_state, set_gradients, set_rng_state

    global _steps_taken
    _steps_taken += 1
    if os.environ.get(FAIL_ENV) == str(rank()) and _steps_taken == 3:
        raise RuntimeError(f"injected failure on rank {rank()} ({FAIL_ENV}={rank()})")
    size = int(batch["input_ids"].shape[0])
    parts = micro_batches(size)
    mine = parts[part(len(parts))]
    device = next(model.parameters()).device
    state = rng_state(device)
    local = [micro_gradient(model, batch, rows, state) for rows in mine]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    grads = torch.stack([g for g, _ in local]) if local else torch.zeros((0, n_params))
    losses = torch.stack([loss.cpu() for _, loss in local]) if local else torch.zeros(0, dtype=torch.float64)
    all_grads = torch.from_numpy(gather(grads.cpu(), len(parts)))
    all_losses = gather(losses, len(parts))
    set_gradients(model, [g.to(device) for g in all_grads])
    if is_active():  # the random state after the step is the one the last micro-batch left
        import torch.distributed as dist

        owner = max(r for r in range(world_size()) if part(len(parts), r=r).stop > part(len(parts), r=r).start)
        after = []
        for mine_now, before in zip(rng_state(device), state):
            if before is None:
                after.append(None)
                continue
            buf = (mine_now if rank() == owner else torch.empty_like(before)).to(_comm_device())
            dist.broadcast(buf, src=owner)
            after.append(buf.cpu())
        set_rng_state(tuple(after), device)
    total = torch.zeros((), dtype=torch.float64)
    for value in all_losses:
        total = total + float(value)
    return float(total) / size


# ----------------------------------------------------------------------------------------- sharded influence
def _slice_examples(data: Any, labels: Any, sl: slice) -> tuple[Any, Any]:
    if hasattr(data, "subset"):  # a TextDataset: keep its ids
        sub = data.subset(np.arange(sl.start, sl.stop))
        return sub, (None if labels is None else np.asarray(labels)[sl])
    return list(data)[sl], (None if labels is None else np.asarray(labels)[sl])


def self_influence(model, tokenizer, checkpoints: Sequence[Any], train: Any, train_labels=None,
                   **options) -> np.ndarray:
    """:func:`gbair_nb.influence.self_influence`, each rank on its slice of ``train``, gathered: (n_train,) on every
    rank (or (n_checkpoints, n_train) with ``per_checkpoint=True``). Higher = more likely mislabeled."""
    from . import influence

    n = len(train.texts) if hasattr(train, "texts") else len(train)
    sub, sub_labels = _slice_examples(train, train_labels, part(n))
    local = influence.self_influence(model, tokenizer, checkpoints, sub, sub_labels, **options)
    return np.moveaxis(gather(np.moveaxis(local, -1, 0), n), 0, -1)


def per_example_grads(model, tokenizer, texts: Sequence[str], labels: Sequence[int], **options):
    """:func:`gbair_nb.gradients.per_example_grads`, each rank on its slice of the examples, gathered:
    ``(grads (n, P), slices)`` on every rank."""
    from . import influence

    n = len(texts)
    sl = part(n)
    g, slices = influence.per_example_grads(model, tokenizer, list(texts)[sl], np.asarray(labels)[sl], **options)
    return torch.from_numpy(gather(g, n)), slices


def aggregated_influence(model, tokenizer, checkpoints: Sequence[Any], train: Any, train_labels=None, on: Any = None,
                         on_labels=None, *, sets=None, **options) -> np.ndarray:
    """:func:`gbair_nb.influence.aggregated_influence`, sharded twice: each rank sums the gradients of its slice of
    ``on`` (the all-reduce completes the test-side vectors) and scores its slice of ``train``; gathered, (n_train,)
    — or (n_sets, n_train) with ``sets`` — on every rank. Negative = pushed the model toward the ``on`` examples.
    Same call styles as the original."""
    from . import influence

    train, train_labels, on, on_labels = influence.resolve_pairs(train, train_labels, on, on_labels)
    n = len(train.texts) if hasattr(train, "texts") else len(train)
    n_on = len(on.texts) if hasattr(on, "texts") else len(on)
    if on_labels is None and hasattr(on, "labels"):
        on_labels = on.labels
    if train_labels is None and hasattr(train, "labels"):
        train_labels = train.labels
    sub, sub_labels = _slice_examples(train, train_labels, part(n))
    on_part = part(n_on)
    on_sub, on_sub_labels = _slice_examples(on, on_labels, on_part)
    if sets is not None:  # positions in the whole `on` → positions in this rank's slice of it
        sets = [np.asarray(x, dtype=np.int64) for x in sets]
        sets = [x[(x >= on_part.start) & (x < on_part.stop)] - on_part.start for x in sets]
    local = influence.aggregated_influence(model, tokenizer, checkpoints, list(getattr(sub, "texts", sub)),
                                           sub_labels, list(getattr(on_sub, "texts", on_sub)), on_sub_labels,
                                           sets=sets, reduce=all_reduce_sum, **options)
    return np.moveaxis(gather(np.moveaxis(local, -1, 0), n), 0, -1)


def top_influences(model, tokenizer, checkpoints: Sequence[Any], train: Any, train_labels=None, test: Any = None,
                   test_labels=None, *, k: int = 5, **options):
    """:func:`gbair_nb.influence.top_influences` with the training set sharded: each rank finds the top ``k`` of its
    slice for every test example, the candidates are gathered and the best ``k`` kept. Returns ``(proponents,
    opponents)`` on every rank; ids are those of the whole training set."""
    import pandas as pd

    from . import influence

    train, train_labels, test, test_labels = influence.resolve_pairs(train, train_labels, test, test_labels)
    if not hasattr(train, "texts"):  # plain lists: ids are positions in the whole list
        from .data import TextDataset

        labels = np.asarray(train_labels, dtype=np.int64)
        train = TextDataset(ids=np.arange(len(train), dtype=np.int64), texts=list(train), labels=labels,
                            class_names=[str(c) for c in range(int(labels.max()) + 1)], name="train",
                            extra=pd.DataFrame(index=range(len(train))))
        train_labels = None
    n = len(train.texts)
    sub, sub_labels = _slice_examples(train, train_labels, part(n))
    pro, opp = influence.top_influences(model, tokenizer, checkpoints, sub, sub_labels, test, test_labels, k=k,
                                        **options)
    if not is_active():
        return pro, opp
    import torch.distributed as dist

    frames = [None] * world_size()
    dist.all_gather_object(frames, (pro, opp))
    out = []
    for i, ascending in ((0, False), (1, True)):
        df = pd.concat([f[i] for f in frames], ignore_index=True)
        df["_order"] = np.arange(len(df))  # ties keep the lower training position first
        df = (df.sort_values(["test_id", "score", "_order"], ascending=[True, ascending, True], kind="stable")
              .groupby("test_id", sort=False).head(k).drop(columns="_order"))
        df["rank"] = df.groupby("test_id").cumcount() + 1
        first = {t: j for j, t in enumerate(dict.fromkeys(frames[0][i]["test_id"]))}
        df = df.sort_values("test_id", key=lambda s: s.map(first), kind="stable").reset_index(drop=True)
        out.append(df)
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ the job and failure
def _digest(report: Any) -> str:
    """What every rank must agree on before rank 0 writes: the flagged ids of every scorer and round."""
    if isinstance(report, dict) and ("scorers" in report or "per_seed" in report):
        report = [{name: [r.get("flagged_ids") for r in res["rounds"]] + [res.get("final_round")]
                   for name, res in one["scorers"].items()} for one in report.get("per_seed", [report])]
    return hashlib.sha256(json.dumps(report, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Job:
    """This process's place in the job: ``rank``, ``world_size``; ``is_main`` (rank 0) writes."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    _store: Any = field(default=None, repr=False)
    _prefix: str = ""
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def compute(self):
        """What the G-BAIR loop should run its heavy steps with (``gbair(..., compute=job.compute)``): alone,
        :data:`gbair_nb.loop.LOCAL`; in a job of several processes, the data-parallel :func:`forward_backward` and
        this module's sharded TracIn functions (the same names and results as :mod:`gbair_nb.influence`)."""
        from .loop import LOCAL, Compute

        if self.world_size == 1:
            return LOCAL
        return Compute(step=forward_backward, influence=sys.modules[__name__])

    def agree(self, result: Any) -> bool:
        """Wait for every rank to finish, check that they agree on ``result`` (a report: its flagged ids);
        return True on rank 0 (go on and write), False elsewhere. Raises :class:`DistributedError` if they differ."""
        if self.world_size == 1:
            return True
        import torch.distributed as dist

        digests = [None] * self.world_size
        dist.all_gather_object(digests, _digest(result))
        self._done.set()  # from here on nobody aborts the job: it has a result
        if len(set(digests)) > 1:
            raise DistributedError(f"the ranks disagree on the result (digests {[d[:8] for d in digests]}); "
                                   "no report written")
        return self.is_main

    # --- failure protocol (through the process group's TCP store)
    def _key(self, what: str) -> str:
        return f"{self._prefix}/{what}"

    def _publish(self, exc: BaseException) -> None:
        if self._store is None:
            return
        try:
            self._store.set(self._key(f"error/{self.rank}"), f"{type(exc).__name__}: {exc}"[:2000])
            self._store.add(self._key("errors"), 1)
        except Exception:  # the store is gone too: torchrun will still see our exit code
            pass

    def _errors(self) -> dict[int, str]:
        out = {}
        for r in range(self.world_size):
            key = self._key(f"error/{r}")
            try:
                if self._store.check([key]):
                    out[r] = self._store.get(key).decode()
            except Exception:
                break
        return out

    def _failure_message(self, errors: dict[int, str]) -> str:
        parts = "; ".join(f"rank {r} failed: {m}" for r, m in sorted(errors.items()))
        return f"error: {parts} — job of {self.world_size} processes stopped, no report written"

    def _watch(self) -> None:
        """Every rank: when another rank has published an error, stop this process. Rank 0 says why first."""
        while not self._done.wait(0.3):
            try:
                if self._store.add(self._key("errors"), 0) == 0:
                    continue
            except Exception:
                return
            if self._done.is_set():
                return
            errors = {r: m for r, m in self._errors().items() if r != self.rank}
            if not errors:
                continue
            if self.is_main:
                print(self._failure_message(errors), file=sys.stderr, flush=True)
                try:
                    self._store.set(self._key("ack"), "1")
                except Exception:
                    pass
            sys.stdout.flush()
            os._exit(1)


def _open_store(timeout: datetime.timedelta):
    import torch.distributed as dist

    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        return None
    try:
        return dist.TCPStore(host, int(port), is_master=False, timeout=timeout, wait_for_workers=False)
    except Exception:
        return None


@contextmanager
def job() -> Iterator[Job]:
    """Run the enclosed work as one process of a torchrun / accelerate job, or alone.

    Launched (``RANK`` and ``WORLD_SIZE`` > 1 in the environment): joins the process group (nccl with a GPU, gloo
    without; ``LOCAL_RANK`` picks the GPU; collectives time out after ``$GBAIR_DIST_TIMEOUT`` s, default 1800) and
    watches for a failed rank. Hand ``j.compute`` to the loop (``gbair``, ``run_recovery``): the data-parallel
    training step and the sharded TracIn. Call ``j.agree(result)`` before writing: True on rank 0 only, after every
    rank finished with the same flagged ids.

    A rank that raises publishes its error; rank 0 prints ``error: rank R failed: …`` and every process exits
    non-zero without writing. Alone: yields ``Job()`` (rank 0 of 1) and changes nothing.
    """
    if not launched():
        yield Job()
        return
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    own_group = not dist.is_initialized()
    be = backend()
    if be == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if own_group:
        dist.init_process_group(backend=be, timeout=timeout)
    prefix = "gbair_nb/{}/{}".format(os.environ.get("TORCHELASTIC_RUN_ID", os.environ.get("MASTER_PORT", "job")),
                                     os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    j = Job(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=dist.get_backend(),
            _store=_open_store(timeout), _prefix=prefix)
    if j._store is not None:
        threading.Thread(target=j._watch, name="gbair_nb-watchdog", daemon=True).start()
    try:
        yield j
    except BaseException as exc:
        if j._done.is_set():  # the job had its result; this is rank 0's own writing error, say it as usual
            raise
        if j.is_main:
            others = {r: m for r, m in j._errors().items() if r != 0}  # a broken collective: name the cause
            j._done.set()  # this thread reports; the watchdog stays quiet
            if others:
                print(j._failure_message(others), file=sys.stderr, flush=True)
                j._publish(exc)
                raise SystemExit(1) from None
            print(f"error: rank 0 of {j.world_size} failed: {type(exc).__name__}: {exc} — no report written",
                  file=sys.stderr, flush=True)
            j._publish(exc)  # the other ranks stop (said before publishing: they may end this process)
            raise
        j._publish(exc)
        print(f"rank {j.rank}: {type(exc).__name__}: {exc} (reported to rank 0)", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 10  # let rank 0 say why before torchrun stops it
        while time.monotonic() < deadline and j._store is not None:
            try:
                if j._store.check([j._key("ack")]):
                    break
            except Exception:
                break
            time.sleep(0.1)
        j._done.set()
        raise SystemExit(1) from None
    else:
        j._done.set()
    finally:
        j._done.set()
        if own_group and dist.is_initialized():
            dist.destroy_process_group()
