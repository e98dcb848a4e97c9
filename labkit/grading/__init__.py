"""The lab as an assignment: the student release, and grading what students wrote."""

from .wire import build  # for checks that hand the student's code a network (docs/instructors.md)

__all__ = ["build"]
