"""labkit/runs/targets.py: every output target is checked before anything is written.

Real files, real symbolic and hard links; each refusal is a TargetError (a ValueError, printed by the
`labkit` command as one line) and writes nothing.
"""

import os

import pytest

from labkit.runs.targets import (MANIFEST, TargetError, made_by_labkit, manifest, output_file, output_folder, same_path, write_made)


def snapshot(folder):
    return {p: (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(folder.rglob("*"))}


def test_a_new_file_is_fine_and_an_existing_one_needs_overwrite(tmp_path):
    assert output_file(tmp_path / "grid.png") == tmp_path / "grid.png"
    (tmp_path / "grid.png").write_bytes(b"my photo")
    with pytest.raises(TargetError, match=r"grid.png already exists; add --force to replace it"):
        output_file(tmp_path / "grid.png")
    assert output_file(tmp_path / "grid.png", overwrite=True) == tmp_path / "grid.png"
    assert output_file(tmp_path / "grid.png", owned=True) == tmp_path / "grid.png"
    assert (tmp_path / "grid.png").read_bytes() == b"my photo"  # checking wrote nothing


def test_links_folders_files_and_inputs_are_refused_even_with_overwrite(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"my photo")
    (tmp_path / "link.png").symlink_to(tmp_path / "photo.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "hard.pt").hardlink_to(tmp_path / "photo.png")
    (tmp_path / "folder.png").mkdir()
    before = snapshot(tmp_path)
    for path, message in [("link.png", "is a symbolic link"), ("dangling.png", "is a symbolic link"),
                          ("folder.png", "is a folder; give a file name such as"),
                          ("photo.png/x.png", "is under"), ("hard.pt", "which this command reads")]:
        with pytest.raises(TargetError, match=message):
            output_file(tmp_path / path, inputs=[tmp_path / "photo.png"], overwrite=True)
    assert snapshot(tmp_path) == before
    assert same_path(tmp_path / "hard.pt", tmp_path / "photo.png")
    assert same_path(tmp_path / "x" / ".." / "photo.png", tmp_path / "photo.png")


def test_a_folder_target_replaces_only_what_labkit_made(tmp_path):
    out = tmp_path / "release"
    names = ["notebooks/01_a.ipynb", "notebooks/02_b.ipynb"]
    assert output_folder(out, names) == out and not out.exists()  # checking writes nothing
    for name in names:
        write_made(out, name, b"released")
    assert (out / MANIFEST).is_file() and set(manifest(out)) == set(names)
    assert all(made_by_labkit(out, name) for name in names)
    with pytest.raises(TargetError, match="01_a.ipynb already exists; add --force to replace"):
        output_folder(out, names)
    assert output_folder(out, names, overwrite=True) == out
    (out / "notebooks" / "02_b.ipynb").write_text("the instructor's own, copied over the release")
    (out / "notebooks" / "thesis.txt").write_text("mine")  # never named: never touched, never in the way
    with pytest.raises(TargetError, match="02_b.ipynb was not written by labkit; labkit never replaces"):
        output_folder(out, names, overwrite=True)
    assert output_folder(out, names, overwrite=True, ours=lambda path: "instructor" in path.read_text()) == out
    write_made(out, "notebooks/01_a.ipynb", b"released again")  # the manifest remembers the last few contents
    assert made_by_labkit(out, "notebooks/01_a.ipynb") and manifest(out)["notebooks/01_a.ipynb"][-1] != \
        manifest(out)["notebooks/01_a.ipynb"][0]
    assert (out / "notebooks" / "thesis.txt").read_text() == "mine"


def test_a_folder_target_refuses_links_and_its_own_inputs(tmp_path):
    source = tmp_path / "lab" / "notebooks"
    source.mkdir(parents=True)
    (source / "01_a.ipynb").write_text("solutions")
    inputs = [source, source / "01_a.ipynb"]
    before = snapshot(tmp_path)
    with pytest.raises(TargetError, match=r"notebooks is .*notebooks, which this command reads"):
        output_folder(tmp_path / "lab", ["notebooks/01_a.ipynb"], inputs=inputs, overwrite=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notebooks").symlink_to(source)
    with pytest.raises(TargetError, match="notebooks is a symbolic link"):
        output_folder(tmp_path / "out", ["notebooks/01_a.ipynb"], inputs=inputs, overwrite=True)
    (tmp_path / "elsewhere").symlink_to(tmp_path / "lab")
    with pytest.raises(TargetError, match="--out .*elsewhere is a symbolic link"):
        output_folder(tmp_path / "elsewhere", ["notebooks/01_a.ipynb"], overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetError, match="is a file"):
        output_folder(tmp_path / "file", ["a.csv"])
    after = snapshot(tmp_path)
    assert {p: v for p, v in after.items() if p in before} == before  # nothing the user had changed


def test_a_damaged_or_linked_manifest_claims_nothing(tmp_path):
    import hashlib

    (tmp_path / "thesis.txt").write_text("mine")
    (tmp_path / MANIFEST).write_text("[1, 2")
    assert manifest(tmp_path) == {} and not made_by_labkit(tmp_path, "thesis.txt")
    (tmp_path / MANIFEST).unlink()
    claim = hashlib.sha256(b"mine").hexdigest()
    (tmp_path / "other.json").write_text(f'{{"files": {{"thesis.txt": ["{claim}"]}}}}')
    (tmp_path / MANIFEST).symlink_to(tmp_path / "other.json")
    assert manifest(tmp_path) == {} and not made_by_labkit(tmp_path, "thesis.txt")
    assert os.readlink(tmp_path / MANIFEST) == str(tmp_path / "other.json")
