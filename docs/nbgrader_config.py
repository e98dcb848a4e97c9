"""nbgrader's configuration for labkit's notebooks (docs/instructors.md, "nbgrader side by side").

Put this file at the root of the nbgrader course folder (beside source/, submitted/,
autograded/), with labkit installed in the environment nbgrader runs in.
tests/test_nbgrader.py runs generate_assignment, autograde, the formgrader and export with it.
"""

import os

from labkit.grading.nbgrader_side import generate_assignment_preprocessors

c = get_config()  # noqa: F821  (nbgrader defines it when it reads this file)

c.CourseDirectory.course_id = "gan-lab"

# The student version: nbgrader's own steps, and the written questions' rubrics removed too.
c.GenerateAssignment.preprocessors = generate_assignment_preprocessors()
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# autograde reruns every cell of every notebook. Its default limit, 30 s per cell, stops the
# first training cell and loses the whole submission; allow an hour per cell.
c.Execute.timeout = 3600
c.Execute.interrupt_on_timeout = True

# The smoke profile: every cell runs with tiny settings (30 training steps, 20 images for FID),
# so autograde checks that the code runs and passes its checks; the numbers mean nothing.
os.environ.setdefault("LABKIT_PROFILE", "smoke")
# One runs folder for every student: a run of labkit's own code is trained once and then
# loaded; a student's own runs are named by a hash of their code, so they never mix.
os.environ.setdefault("LABKIT_RUNS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs"))
