"""The lab as an assignment: the student release, and grading what students wrote."""
