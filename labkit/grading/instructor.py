"""The instructor's commands after grading: review the written answers, export the gradebook, collect a download.

    labkit assignment collect DOWNLOAD --out SUBMISSIONS    an LMS bulk download, one folder per student
    labkit assignment review REPORT [--grader NAME]         the written answers, question by question
    labkit assignment export REPORT --format canvas|moodle|csv [--deadline ... --late-penalty-per-day ...]

Each command's work lives in its own module (collect.py, review.py, exports.py); this one
only declares their flags, for labkit/machinery/cli.py.
"""

import getpass
from pathlib import Path


def add_parsers(actions):
    """Add the three commands to `labkit assignment`'s subparsers; each sets args.run."""
    c = actions.add_parser("collect", help="turn a Canvas or Moodle bulk download into one folder per student")
    c.add_argument("download", type=Path, help="the download's folder (unzipped): flat files named by student")
    c.add_argument("--out", type=Path, required=True, help="the folder of students' folders to write")
    c.set_defaults(run=_collect)
    r = actions.add_parser("review", help="grade the written answers question by question in a local web page")
    r.add_argument("reports", type=Path, help="the report folder `labkit assignment grade` wrote")
    r.add_argument("--grader", default=getpass.getuser(), help="your name, saved with each mark (default: %(default)s)")
    r.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    r.set_defaults(run=_review)
    e = actions.add_parser("export", help="the merged gradebook as an LMS's grade import, feedback and a summary")
    e.add_argument("reports", type=Path, help="the report folder `labkit assignment grade` wrote")
    e.add_argument("--format", choices=("canvas", "moodle", "csv"), default="csv")
    e.add_argument("--deadline", default=None, help="ISO date and time, e.g. 2026-12-01T23:59+01:00 (default: none)")
    e.add_argument("--late-penalty-per-day", type=float, default=0.0,
                   help="percent of the total taken off per day (or part of one) late (default: 0: late is recorded)")
    e.add_argument("--assignment", default="GAN lab", help="the assignment's column name in the LMS")
    e.set_defaults(run=_export)


def _collect(args):
    from .collect import collect

    return collect(args.download, args.out)


def _review(args):
    from .review import serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {args.port}")
    return serve(args.reports, args.grader, args.port)


def _export(args):
    from .exports import export

    return export(args.reports, args.format, deadline=args.deadline, penalty_per_day=args.late_penalty_per_day,
                  assignment=args.assignment)
