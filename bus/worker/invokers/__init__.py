"""One invoker per target kind, and the table the worker chooses them from."""
from __future__ import annotations

from bus.config.model import FunctionTarget
from bus.worker.invoker import Invoker
from bus.worker.invokers.function import FunctionInvoker


def invokers_for(functions: FunctionInvoker) -> dict[type, Invoker]:
    """Target type -> its invoker. A new kind adds its invoker here."""
    return {FunctionTarget: functions}
