"""Collecting a class from Canvas's and Moodle's bulk downloads, the late policy, and the LMS grade imports.
The whole loop, with grading: tests/test_instructor.py."""

import os
from datetime import datetime, timezone

import pytest
from course import labkit

from labkit.grading import collect, exports

NB = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'


def download(folder, names):
    """A bulk download: these files, each a (tiny) notebook, each modified at a different minute."""
    for minute, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(NB if name.endswith(".ipynb") else "not a notebook")
        stamp = datetime(2026, 12, 1, 12, minute, tzinfo=timezone.utc).timestamp()
        os.utime(path, (stamp, stamp))
    return folder


def test_collect_turns_canvas_and_moodle_downloads_into_one_folder_per_student(tmp_path):
    folder = download(tmp_path / "download", [
        "ada_1234_5678_01_train_dcgan.ipynb", "ada_1234_5678_04_nash_equilibrium.ipynb",
        "ben_LATE_2345_6789_01_train_dcgan.ipynb", "ben_LATE_2345_6790_01_train_dcgan-1.ipynb",  # resubmitted
        "Cy Twombly_3456_assignsubmission_file_01_train_dcgan.ipynb",
        "Di Prima_4567_assignsubmission_file_/09_vae.ipynb",  # newer Moodle: a folder per student
        "Ed Ruscha_5678_assignsubmission_file_2026-12-03T09-30_01_train_dcgan.ipynb",  # a time in the name
        "ada_1234_5678_notes.txt"])
    done = labkit("assignment", "collect", folder, "--out", tmp_path / "class")
    assert done.returncode == 0, done.stderr
    assert "5 students, 6 notebooks" in done.stdout and "ada_1234_5678_notes.txt" in done.stdout
    found = sorted(p.relative_to(tmp_path / "class").as_posix() for p in (tmp_path / "class").rglob("*.ipynb"))
    assert found == ["Cy_Twombly/01_train_dcgan.ipynb", "Di_Prima/09_vae.ipynb", "Ed_Ruscha/01_train_dcgan.ipynb",
                     "ada/01_train_dcgan.ipynb", "ada/04_nash_equilibrium.ipynb", "ben/01_train_dcgan.ipynb"]
    minute = lambda path: datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%d %H:%M")
    assert minute(tmp_path / "class" / "ben" / "01_train_dcgan.ipynb") == "01 12:03"  # the newest file wins
    assert minute(tmp_path / "class" / "Ed_Ruscha" / "01_train_dcgan.ipynb") == "03 09:30"
    roster = collect.read_roster(tmp_path / "class")
    assert roster["ben"] == {"student": "ben", "full_name": "ben", "lms": "canvas", "lms_id": "2345", "late": "yes"}
    assert roster["Cy_Twombly"]["full_name"] == "Cy Twombly" and roster["Cy_Twombly"]["lms"] == "moodle"
    again = labkit("assignment", "collect", folder, "--out", tmp_path / "class")  # refreshes what it wrote
    assert again.returncode == 0, again.stderr


def test_collect_keeps_apart_two_students_whose_names_give_the_same_folder(tmp_path):
    folder = download(tmp_path / "download", [  # a Moodle download: four students, two folder names
        "Anna Müller_111_assignsubmission_file_01_train_dcgan.ipynb",
        "Anna Möller_112_assignsubmission_file_01_train_dcgan.ipynb",
        "Anna Möller_112_assignsubmission_file_04_nash_equilibrium.ipynb",
        "Wei Zhang_201_assignsubmission_file_/01_train_dcgan.ipynb",
        "Wei Zhang_202_assignsubmission_file_/01_train_dcgan.ipynb",
        "Wei Zhang_202_assignsubmission_file_/09_vae.ipynb"])
    done = labkit("assignment", "collect", folder, "--out", tmp_path / "class")
    assert done.returncode == 0, done.stderr
    assert "4 students, 6 notebooks" in done.stdout, done.stdout
    found = sorted(p.relative_to(tmp_path / "class").as_posix() for p in (tmp_path / "class").rglob("*.ipynb"))
    assert found == ["Anna_M_ller-111/01_train_dcgan.ipynb", "Anna_M_ller-112/01_train_dcgan.ipynb",
                     "Anna_M_ller-112/04_nash_equilibrium.ipynb", "Wei_Zhang-201/01_train_dcgan.ipynb",
                     "Wei_Zhang-202/01_train_dcgan.ipynb", "Wei_Zhang-202/09_vae.ipynb"]
    roster = collect.read_roster(tmp_path / "class")
    assert {s: (r["full_name"], r["lms_id"]) for s, r in roster.items()} == {
        "Anna_M_ller-111": ("Anna Müller", "111"), "Anna_M_ller-112": ("Anna Möller", "112"),
        "Wei_Zhang-201": ("Wei Zhang", "201"), "Wei_Zhang-202": ("Wei Zhang", "202")}
    grades = [exports.Grade(s, rows=[dict(kind="code", notebook="01", points=float(i), max_points=5.0)])
              for i, s in enumerate(sorted(roster))]
    moodle = exports.lms_table(grades, "moodle", roster, "GAN lab").splitlines()[1:]
    assert [line.split(",")[:2] + [line.split(",")[4]] for line in moodle] == [
        ["Participant 111", "Anna Müller", "0"], ["Participant 112", "Anna Möller", "1"],
        ["Participant 201", "Wei Zhang", "2"], ["Participant 202", "Wei Zhang", "3"]]


def test_a_display_name_that_is_a_formula_stays_text_in_the_roster_and_comes_back_as_given(tmp_path):
    """Red team: a Moodle display name `=HYPERLINK(...)` reached the roster a spreadsheet opens, unquoted."""
    name = '=HYPERLINK("http:\\\\evil.example";"click")'
    folder = download(tmp_path / "download", [f"{name}_333_assignsubmission_file_01_train_dcgan.ipynb"])
    done = labkit("assignment", "collect", folder, "--out", tmp_path / "class")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "class" / collect.ROSTER).read_text()
    assert "'=HYPERLINK" in text and ',"=HYPERLINK' not in text and ",=HYPERLINK" not in text, text
    assert [r["full_name"] for r in collect.read_roster(tmp_path / "class").values()] == [name]


@pytest.mark.parametrize("names, said", [
    ([], "no notebook in"),
    (["readme.txt"], "no notebook in"),
    (["ada_1234_5678_01_train_dcgan.ipynb"], "is a Canvas or Moodle download"),
])
def test_grading_a_folder_without_a_student_folder_says_what_to_do(tmp_path, names, said):
    folder = download(tmp_path / "download", names)
    folder.mkdir(exist_ok=True)
    done = labkit("assignment", "grade", folder, "--out", tmp_path / "report")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and said in done.stderr, done.stderr
    assert not (tmp_path / "report").exists()
    if not names or names == ["readme.txt"]:
        done = labkit("assignment", "collect", folder, "--out", tmp_path / "class")
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no notebook in" in done.stderr


def test_late_days_count_each_started_day_and_the_penalty_is_a_share_of_the_total():
    assert exports.days_late("2026-12-01T22:59:00+00:00", "2026-12-01T23:59+00:00") == 0
    assert exports.days_late("2026-12-02T00:00:00+00:00", "2026-12-01T23:59+00:00") == 1
    assert exports.days_late("2026-12-03T23:59:00+00:00", "2026-12-01T23:59+00:00") == 2
    assert exports.days_late("2026-12-04T00:00:00+00:00", "2026-12-02T00:00+01:00") == 3  # 73 hours
    assert exports.days_late("", "2026-12-01T23:59+00:00") == 0
    grade = exports.Grade("ada", rows=[dict(kind="code", notebook="01", points=10.0, max_points=14.0),
                                       dict(kind="written", notebook="01", points=6.0, max_points=16.0)],
                          days_late=2, penalty_percent=20.0)
    assert (grade.points(), grade.possible(), grade.final) == (16.0, 30.0, 12.8)
    with pytest.raises(ValueError, match="write it as 2026-12-01T23:59"):
        exports.parse_deadline("next friday")


def test_the_lms_tables_have_their_import_columns():
    grades = [exports.Grade("ada", rows=[dict(kind="code", notebook="01", points=3.0, max_points=5.0)]),
              exports.Grade("Cy_Twombly", rows=[dict(kind="code", notebook="01", points=5.0, max_points=5.0)])]
    roster = {"ada": {"full_name": "ada", "lms": "canvas", "lms_id": "1234"},
              "Cy_Twombly": {"full_name": "Cy Twombly", "lms": "moodle", "lms_id": "3456"}}
    canvas = exports.lms_table(grades, "canvas", roster, "GAN lab").splitlines()
    assert canvas[:3] == ["Student,ID,SIS User ID,SIS Login ID,Section,GAN lab", "Points Possible,,,,,5",
                          "ada,1234,,ada,,3"]
    moodle = exports.lms_table(grades, "moodle", roster, "GAN lab").splitlines()
    assert moodle[0].startswith("Identifier,Full name,Email address,Status,Grade,Maximum Grade,")
    assert moodle[2].startswith("Participant 3456,Cy Twombly,,,5,5,Yes,")
    plain = exports.lms_table(grades, "csv", roster, "GAN lab").splitlines()
    assert plain[0].startswith("student,01,code,written,total,max_points,") and plain[1].startswith("ada,3,3,0,3,5,")


def test_export_says_what_to_do_without_a_report(tmp_path):
    done = labkit("assignment", "export", tmp_path, "--format", "canvas")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "grade the class into it first" in done.stderr
