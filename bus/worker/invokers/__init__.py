"""One invoker per target kind, and the table the worker chooses them from."""
from __future__ import annotations

from bus.config.model import BusTarget, FunctionTarget, HttpTarget, QueueTarget
from bus.store.queue import Queue
from bus.worker.invoker import Invoker
from bus.worker.invokers.bus import BusInvoker
from bus.worker.invokers.function import FunctionInvoker
from bus.worker.invokers.http import HttpInvoker
from bus.worker.invokers.queue import QueueInvoker
from bus.store.sqs import SqsStore


def invokers_for(functions: FunctionInvoker, queue: Queue) -> dict[type, Invoker]:
    """Target type -> its invoker. A new kind adds its invoker here.

    `queue` is the worker's (Watched, so its calls count for /healthz): the http invoker takes
    its rate-limit turns through it."""
    return {FunctionTarget: functions, HttpTarget: HttpInvoker(queue), BusTarget: BusInvoker(),
            QueueTarget: QueueInvoker(SqsStore(queue.redis))}
