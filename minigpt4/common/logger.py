"""Console logging set-up and the per-iteration metric lines of the training loop.

``MetricLogger.log_every`` produces the original's line format, e.g. (one line)::

    Train: data epoch: [0]  [ 50/500]  eta: 0:03:04  lr: 0.000011  loss: 4.9250
    time: 0.3323  data: 0.0000  max mem: 22076

(``max mem`` only with CUDA). The original printed these lines; here they go through
``logging`` so that only rank 0 shows them.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from minigpt4.common import dist_utils

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"
BYTES_PER_MB = 1024.0 * 1024.0


def setup_logger() -> None:
    """Log INFO and above on rank 0 and only warnings elsewhere, in the original's format.

    Like the original's ``basicConfig``, this adds a handler only when the root logger has
    none (so an embedding application or pytest keeps its own); the level is always set.
    """
    level = logging.INFO if dist_utils.is_main_process() else logging.WARNING
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=[logging.StreamHandler()])
    logging.getLogger().setLevel(level)
    # gradio's HTTP client logs every request it makes to the local server at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class SmoothedValue:
    """A series of values with a sliding window (``window_size``) and a global average."""

    def __init__(self, window_size: int = 20, fmt: str | None = None) -> None:
        self.deque: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = "{median:.4f} ({global_avg:.4f})" if fmt is None else fmt

    def update(self, value: float, n: int = 1) -> None:
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def state_dict(self) -> dict[str, float]:
        """What the global average needs (a resumed epoch continues the sums)."""
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.total = float(state["total"])
        self.count = int(state["count"])

    def synchronize_between_processes(self) -> None:
        """Sum ``count`` and ``total`` over ranks (the window stays local, as in the original)."""
        if not dist_utils.is_dist_avail_and_initialized():
            return
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([self.count, self.total], dtype=torch.float64, device=device)
        dist.barrier()
        dist.all_reduce(t)
        self.count = int(t[0].item())
        self.total = float(t[1].item())

    @property
    def median(self) -> float:
        return torch.tensor(list(self.deque)).median().item()

    @property
    def avg(self) -> float:
        return torch.tensor(list(self.deque), dtype=torch.float32).mean().item()

    @property
    def global_avg(self) -> float:
        return self.total / self.count

    @property
    def max(self) -> float:
        return max(self.deque)

    @property
    def value(self) -> float:
        return self.deque[-1]

    def __str__(self) -> str:
        return self.fmt.format(
            median=self.median,
            avg=self.avg,
            global_avg=self.global_avg,
            max=self.max,
            value=self.value,
        )


class MetricLogger:
    """Named :class:`SmoothedValue` meters and the periodic progress line."""

    def __init__(self, delimiter: str = "\t") -> None:
        self.meters: dict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if not isinstance(value, (float, int)):
                raise TypeError(f"meter '{name}' takes a number, got {type(value).__name__}")
            self.meters[name].update(value)

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def __getattr__(self, attr: str) -> SmoothedValue:
        meters = self.__dict__.get("meters", {})
        if attr in meters:
            return meters[attr]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}'")

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def global_avg(self) -> str:
        return self.delimiter.join(
            f"{name}: {meter.global_avg:.4f}" for name, meter in self.meters.items()
        )

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {name: meter.state_dict() for name, meter in self.meters.items()}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        for name, meter_state in state.items():
            self.meters[name].load_state_dict(meter_state)

    def synchronize_between_processes(self) -> None:
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def log_every(
        self,
        iterable: Iterable,
        print_freq: int,
        header: str = "",
        start: int = 0,
        total: int | None = None,
    ) -> Iterator:
        """Yield from ``iterable``, logging a progress line every ``print_freq`` iterations.

        ``start``/``total`` number the lines when an epoch resumes part-way: the first item is
        iteration ``start`` of ``total`` (``len(iterable)`` by default).
        """
        total = len(iterable) if total is None else total
        i = start
        start_time = time.time()
        end = time.time()
        iter_time = SmoothedValue(fmt="{avg:.4f}")
        data_time = SmoothedValue(fmt="{avg:.4f}")
        space_fmt = ":" + str(len(str(total))) + "d"
        parts = [header, "[{0" + space_fmt + "}/{1}]", "eta: {eta}", "{meters}"]
        parts += ["time: {time}", "data: {data}"]
        with_cuda = torch.cuda.is_available()
        if with_cuda:
            parts.append("max mem: {memory:.0f}")
        log_msg = self.delimiter.join(parts)
        n_done = 0
        for obj in iterable:
            data_time.update(time.time() - end)
            yield obj
            iter_time.update(time.time() - end)
            n_done += 1
            if (i % print_freq == 0) or (i == total - 1):
                eta_seconds = iter_time.global_avg * (total - i)
                memory = torch.cuda.max_memory_allocated() / BYTES_PER_MB if with_cuda else 0
                logger.info(
                    log_msg.format(
                        i,
                        total,
                        eta=str(datetime.timedelta(seconds=int(eta_seconds))),
                        meters=str(self),
                        time=str(iter_time),
                        data=str(data_time),
                        memory=memory,
                    )
                )
            i += 1
            end = time.time()
        total_time = time.time() - start_time
        total_time_str = str(datetime.timedelta(seconds=int(total_time)))
        logger.info(
            "%s Total time: %s (%.4f s / it)", header, total_time_str, total_time / max(n_done, 1)
        )
