"""The one error type for bad schedules, with AWS-style messages.

AWS answers a bad expression with just ``Parameter ScheduleExpression is not valid.``;
we keep that opening (so people searching for the AWS text find us) and add what is
wrong and where, because `bus validate` shows the message next to file and line.
"""
from __future__ import annotations


class ScheduleError(ValueError):
    """An invalid schedule expression, time zone, start or end."""


def invalid(parameter: str, detail: str) -> ScheduleError:
    """ScheduleError for the named AWS parameter, e.g. ``ScheduleExpression``."""
    return ScheduleError(f"Parameter {parameter} is not valid: {detail}")


def invalid_expression(detail: str) -> ScheduleError:
    return invalid("ScheduleExpression", detail)
