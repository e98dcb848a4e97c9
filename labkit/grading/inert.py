"""Student text made inert for the reports: a CSV cell no spreadsheet runs, Markdown no viewer renders as markup.

Grading's reports carry text a student controls: their folder's name, and the
message of an error their code raised while their cells ran. Written raw, a
cell `=HYPERLINK("http://evil.example", "click")` is a formula to a spreadsheet,
and `<img src=x onerror=...>` or `[grade](http://evil.example)` is markup to a
Markdown viewer. Both functions here keep the text readable, as text.
"""

import re

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list: what a spreadsheet may read as a formula
MARKUP = set("\\`*<>[]|&")  # what can begin a tag, an entity, a link or image, code, emphasis, a new table cell
URL = re.compile(r"(?i)(://|www\.)")
ZERO_WIDTH = "\u200b"


def csv_cell(value):
    """A text cell a spreadsheet shows as text: one starting with = + - @, a TAB or a CR gets a leading
    quote (OWASP's advice); numbers and other text are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def from_csv_cell(value):
    """The text csv_cell quoted, as it was given."""
    return value[1:] if isinstance(value, str) and value[:1] == "'" and value[1:].startswith(FORMULA_STARTS) else value


def markdown(text):
    """`text` on one line, as Markdown that renders as the same characters: the characters that start
    markup (an HTML tag or entity, a link or image, a code span, a table cell's end, emphasis) are
    backslash-escaped, as CommonMark allows for any punctuation, and bare web addresses are broken by a
    zero-width space, so no viewer makes them links. Other text (`discriminator_loss: 0`) stays as it is."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    escaped = "".join("\\" + c if c in MARKUP else c for c in text)
    return URL.sub(lambda m: m.group(1)[0] + ZERO_WIDTH + m.group(1)[1:], escaped)
