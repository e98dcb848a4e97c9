"""Progress bars that a saved notebook keeps: text, never widgets.

tqdm.auto draws a widget in Jupyter. A saved notebook refers to each widget's model, which
lives only as long as the kernel, and a bar that closed when it finished is missing even
from a saved widget state: the student pass found "Error displaying widget: model not
found" where each FID bar had been, after every save and reopen (issue 27). A text bar
leaves its last line behind.

In a notebook a bar writes to stdout, with the lines around it, at position 0: it redraws
its own line with "\\r", which Jupyter honours, and never moves the cursor up ("\\x1b[A"),
as tqdm does for a bar opened while another is open; a notebook does not honour that and
printed the sweep's training bar as a new line every second. In a terminal tqdm's own
choices hold: stderr, and a second bar nested under the first.
"""

import sys
import textwrap

from tqdm import tqdm

from .stopping import in_ipython


def bar(iterable=None, **options):
    """A tqdm text bar over `iterable` (or with `total=`), placed as the module docstring says."""
    if in_ipython():
        options.setdefault("file", sys.stdout)
        options.setdefault("position", 0)
        options.setdefault("mininterval", 1.0)  # a saved notebook keeps one redraw per second, not ten
    return tqdm(iterable, **options)


NOTEBOOK_WIDTH = 88  # characters of a line JupyterLab shows whole at 1280 pixels with its file browser open


def wrapped(text, width=NOTEBOOK_WIDTH):
    """`text` broken between words at `width` characters: JupyterLab wraps long lines mid-word (a student pass
    read "loadin / g it" and "1816 unsur / e"); a word longer than `width` (a path) stays whole."""
    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)
