"""Grading the written answers question by question, in a local web page.

    labkit assignment review REPORT [--grader NAME] [--port N]

serves a page on this machine only (127.0.0.1, with a secret token in its address, as
Jupyter does) that shows one written question across the class: the students in a
shuffled order, named "Student 1", "Student 2", ... (the order is the same each time for
one grader, and differs between graders), each answer beside the outputs of that
student's own notebook above it (figures, tables, printed numbers). The grader ticks
rubric items (one click each toggles one), adds a comment and moves on.

Every change is saved at once in REPORT/written.csv (one row per student and question:
student,question,rubric_items,points,comment,grader), written whole and renamed into
place under a file lock, so closing the page loses nothing, and two graders can share a
report folder (each taking some of the questions, each with their own --grader name).

What students wrote is never trusted as HTML: answers are rendered from Markdown with
raw HTML escaped and harmful links removed (mistune), outputs are shown as text or as
PNG images checked to be PNGs, and the page's Content-Security-Policy runs no script but
its own.
"""

import csv
import hashlib
import html
import json
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mistune
from filelock import FileLock

from ..runs.atomic import write_csv
from ..runs.targets import refuse_link
from . import written

MARKS = "written.csv"
MARK_COLUMNS = ("student", "question", "rubric_items", "points", "comment", "grader")
MAX_COMMENT = 4000
PAGE_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1em 2em; color: #222; }
main { display: flex; gap: 2em; } main > * { flex: 1; min-width: 0; }
.answer { background: #f7f7f2; padding: 0 1em; border-left: 4px solid #bbb; }
.outputs img { max-width: 100%; display: block; margin: .5em 0; } pre { white-space: pre-wrap; font-size: 12px; }
.strip a { display: inline-block; min-width: 1.8em; text-align: center; margin: 1px; border: 1px solid #ccc; }
.strip a.done { background: #cfe8cf; } .strip a.here { outline: 2px solid #333; }
.item { display: block; width: 100%; text-align: left; margin: .3em 0; padding: .4em; border: 1px solid #999;
        background: #fff; cursor: pointer; } .item[aria-pressed=true] { background: #2d6a2d; color: #fff; }
textarea { width: 100%; } .none { color: #888; } header h1 { font-size: 1.3em; margin: .3em 0; }
"""
PAGE_SCRIPT = """
const form = document.querySelector("form.rubric");
const saved = document.getElementById("saved");
let pending = null;
async function save(change) {
  saved.textContent = "saving...";
  const response = await fetch(form.dataset.mark, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({question: +form.dataset.question, slot: +form.dataset.slot, ...change})});
  if (!response.ok) { saved.textContent = "not saved: " + (await response.text()); return; }
  const mark = await response.json();
  for (const button of form.querySelectorAll(".item"))
    button.setAttribute("aria-pressed", mark.items.includes(button.dataset.id) ? "true" : "false");
  document.getElementById("points").textContent = mark.points;
  saved.textContent = "saved";
}
function saveComment() {
  if (pending === null) return Promise.resolve();
  clearTimeout(pending); pending = null;
  return save({comment: document.getElementById("comment").value});
}
for (const button of form.querySelectorAll(".item"))
  button.addEventListener("click", () => saveComment().then(() => save({toggle: button.dataset.id})));
const comment = document.getElementById("comment");
comment.addEventListener("input", () => {
  saved.textContent = "typing...";
  clearTimeout(pending); pending = setTimeout(saveComment, 400);
});
comment.addEventListener("blur", saveComment);
for (const link of document.querySelectorAll("a"))
  link.addEventListener("click", (event) => {
    if (pending === null) return;
    event.preventDefault(); saveComment().then(() => { window.location = link.href; });
  });
"""


# ---------------------------------------------------------------------------
# The marks: REPORT/written.csv


def read_marks(reports):
    """{(student, question key): row} of REPORT/written.csv (none yet: empty)."""
    path = Path(reports) / MARKS
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {(r["student"], r["question"]): r for r in csv.DictReader(f)}


class Marks:
    """REPORT/written.csv, changed one mark at a time: each change rereads the file and rewrites it whole
    under a lock, so two graders' servers on one report lose nothing of each other's."""

    def __init__(self, reports, grader):
        self.path = Path(reports) / MARKS
        refuse_link(self.path)
        self.grader = grader
        self.lock = FileLock(str(self.path.with_name(f".{MARKS}.lock")))

    def get(self, student, question):
        row = read_marks(self.path.parent).get((student, question.key))
        if row is None:
            return {"items": [], "points": None, "comment": "", "grader": ""}
        items = [i for i in row["rubric_items"].split(";") if i]
        return {"items": items, "points": written.score(question, items), "comment": row["comment"],
                "grader": row["grader"]}

    def change(self, student, question, toggle=None, comment=None):
        """Toggle one rubric item and/or set the comment; returns the mark as saved."""
        with self.lock:
            marks = read_marks(self.path.parent)
            row = marks.get((student, question.key), {"student": student, "question": question.key,
                                                      "rubric_items": "", "comment": ""})
            items = [i for i in row["rubric_items"].split(";") if i]
            if toggle is not None:
                if toggle not in {i["id"] for i in question.rubric}:
                    raise ValueError(f"no rubric item {toggle!r} in {question.key}")
                items = [i for i in items if i != toggle] if toggle in items else items + [toggle]
            order = [i["id"] for i in question.rubric]
            items = sorted(set(items), key=order.index)
            if comment is not None:
                row["comment"] = comment[:MAX_COMMENT]
            marks[student, question.key] = {**row, "rubric_items": ";".join(items),
                                            "points": f"{written.score(question, items):g}", "grader": self.grader}
            write_csv(self.path, MARK_COLUMNS, sorted(marks.values(), key=lambda r: (r["question"], r["student"])))
        return self.get(student, question)


def shuffled(students, grader, question):
    """The students in the order one grader sees them for one question: shuffled, the same every time."""
    return sorted(students, key=lambda s: hashlib.sha256(f"{grader}\0{question.key}\0{s}".encode()).hexdigest())


# ---------------------------------------------------------------------------
# The page


_markdown = mistune.create_markdown(escape=True)


def rendered(text):
    """A student's Markdown as safe HTML: raw HTML escaped, harmful links removed."""
    return _markdown(text)


def outputs_html(outputs):
    parts = []
    for output in outputs:
        if "png" in output:
            parts.append(f'<img alt="a figure of the student\'s notebook" src="data:image/png;base64,{output["png"]}">')
        elif "text" in output:
            parts.append(f"<pre>{html.escape(output['text'])}</pre>")
    return "\n".join(parts) or "<p class=none>no outputs above this answer in the student's notebook</p>"


def page(review, number, slot, nonce):
    """The HTML of one question (1-based `number`) for one student (1-based `slot` in the grader's order)."""
    question = review.questions[number - 1]
    order = review.order(question)
    student = order[slot - 1]
    shown = review.answers(question).get(student, {"answer": "", "outputs": []})
    mark = review.marks.get(student, question)
    marks = read_marks(review.reports)
    marked = {s for s in order if (s, question.key) in marks}
    base = f"/{review.token}"
    strip = "".join(f'<a href="{base}/q/{number}/{i}" class="{"here " if i == slot else ""}'
                    f'{"done" if s in marked else ""}">{i}</a>' for i, s in enumerate(order, 1))
    items = "".join(f'<button type=button class=item data-id="{html.escape(i["id"])}" '
                    f'title="the student reads: {html.escape(i["feedback"])}" aria-pressed="{"true" if i["id"] in mark["items"] else "false"}">'
                    f'<b>{i["points"]:+g}</b> {html.escape(i["text"])}</button>' for i in question.rubric)
    answer = rendered(shown["answer"]) if written.is_answered(shown["answer"]) else "<p class=none>not answered</p>"
    previous = f'<a id=previous href="{base}/q/{number}/{slot - 1}">previous</a>' if slot > 1 else ""
    following = (f'<a id=next href="{base}/q/{number}/{slot + 1}">next</a>' if slot < len(order) else
                 f'<a id=next href="{base}/">all questions</a>')
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>{html.escape(question.key)}: student {slot}</title><style>{PAGE_STYLE}</style></head><body>
<header><a href="{base}/">all questions</a> <h1>{html.escape(question.notebook)}: {html.escape(question.name)}
({question.points:g} points)</h1><p>Student {slot} of {len(order)} ({len(marked)} marked)</p>
<nav class=strip>{strip}</nav></header>
<section class=prompt>{rendered(question.prompt)}<details><summary>model answer</summary>
{rendered(question.model)}</details></section>
<main><article class=answer><h2>Answer</h2>{answer}</article>
<aside class=outputs><h2>Their notebook above it</h2>{outputs_html(shown["outputs"])}</aside></main>
<form class=rubric onsubmit="return false" data-mark="{base}/mark" data-question={number} data-slot={slot}>
<h2>Rubric</h2>{items}
<p>Points: <output id=points>{"-" if mark["points"] is None else f'{mark["points"]:g}'}</output> / {question.points:g}</p>
<label>Comment for the student<br><textarea id=comment rows=4 maxlength={MAX_COMMENT}>{html.escape(mark["comment"])}</textarea></label>
<p><span id=saved>{"saved" if mark["points"] is not None else "not marked yet"}</span></p>
<p>{previous} {following}</p></form>
<script nonce="{nonce}">{PAGE_SCRIPT}</script></body></html>"""


def index(review):
    """The list of questions, with how many answers each has marked."""
    rows, marks = [], read_marks(review.reports)
    for number, question in enumerate(review.questions, 1):
        marked = sum((s, question.key) in marks for s in review.students)
        rows.append(f'<tr><td><a href="/{review.token}/q/{number}/1">{html.escape(question.notebook)}: '
                    f'{html.escape(question.name)}</a></td><td>{question.points:g}</td>'
                    f'<td>{marked} / {len(review.students)}</td></tr>')
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>labkit review</title>
<style>{PAGE_STYLE}</style></head><body><h1>Written questions, {len(review.students)} students</h1>
<p>Grader: {html.escape(review.marks.grader)}. Marks are saved in {html.escape(str(review.marks.path))} as you make them.</p>
<table><tr><th>question</th><th>points</th><th>marked</th></tr>{''.join(rows)}</table></body></html>"""


class Review:
    """What the server shows: the report's questions, students and answers, and the marks."""

    def __init__(self, reports, grader):
        self.reports = Path(reports)
        self.questions, submitted = written.load(reports)
        self.students = sorted(submitted)
        if not self.questions:
            raise ValueError(f"the notebooks graded into {reports} have no written questions to review")
        if not self.students:
            raise ValueError(f"no students in {reports}: grade a class into it first")
        self.marks = Marks(reports, grader)
        self.token = secrets.token_urlsafe(16)
        self._answers = {}

    def order(self, question):
        return shuffled(self.students, self.marks.grader, question)

    def answers(self, question):
        if question.key not in self._answers:
            self._answers[question.key] = written.load_answers(self.reports, question)
        return self._answers[question.key]


# ---------------------------------------------------------------------------
# The server


class Handler(BaseHTTPRequestHandler):
    review = None  # set on a subclass by `server`

    def log_message(self, *args):  # quiet: the page is the grader's log
        pass

    def do_GET(self):
        parts, nonce = self.path.split("?")[0].strip("/").split("/"), secrets.token_urlsafe(12)
        if not parts or parts[0] != self.review.token:
            return self.send(HTTPStatus.NOT_FOUND, "text/plain", "not found: open the address labkit printed")
        if parts[1:] == []:
            return self.send(HTTPStatus.OK, "text/html", index(self.review))
        if len(parts) == 4 and parts[1] == "q" and all(re.fullmatch(r"[1-9]\d{0,5}", p) for p in parts[2:]):
            number, slot = int(parts[2]), int(parts[3])
            if number <= len(self.review.questions) and slot <= len(self.review.students):
                return self.send(HTTPStatus.OK, "text/html", page(self.review, number, slot, nonce), nonce)
        return self.send(HTTPStatus.NOT_FOUND, "text/plain", "no such question or student")

    def do_POST(self):
        if self.path != f"/{self.review.token}/mark":
            return self.send(HTTPStatus.NOT_FOUND, "text/plain", "not found")
        try:
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(min(length, 64 * 1024)))
            question = self.review.questions[int(request["question"]) - 1]
            student = self.review.order(question)[int(request["slot"]) - 1]
            comment = request.get("comment")
            mark = self.review.marks.change(student, question, toggle=request.get("toggle"),
                                            comment=None if comment is None else str(comment))
        except (ValueError, KeyError, IndexError, TypeError) as err:
            return self.send(HTTPStatus.BAD_REQUEST, "application/json", json.dumps({"error": str(err)}))
        self.send(HTTPStatus.OK, "application/json", json.dumps(mark))

    def send(self, status, kind, text, nonce=""):
        """Answer with `text`; the page's own scripts carry `nonce`, and no other script runs."""
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        scripts = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header("Content-Security-Policy", f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                                                    f"script-src {scripts}; connect-src 'self'; form-action 'none'")
        self.end_headers()
        self.wfile.write(body)


def server(reports, grader, port=0):
    """A review server for REPORT on 127.0.0.1 (port 0: any free port), not yet serving; its URL is url(server)."""
    review = Review(reports, grader)
    handler = type("ReviewHandler", (Handler,), {"review": review})
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def url(httpd):
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}/{httpd.RequestHandlerClass.review.token}/"


def serve(reports, grader, port=0):
    """Serve the review page until Ctrl-C (the `labkit assignment review` command)."""
    httpd = server(reports, grader, port)
    review = httpd.RequestHandlerClass.review
    print(f"labkit: {len(review.questions)} written questions, {len(review.students)} students; open "
          f"{url(httpd)}\n(marks are saved in {review.marks.path} as you make them; Ctrl-C stops the server)",
          flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def serve_in_thread(httpd):
    """Serve in a background thread (for tests and notebooks); returns the thread. Stop with httpd.shutdown()."""
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return thread
