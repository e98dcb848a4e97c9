"""The grading secret: where every hidden check's inputs come from.

The hidden checks' code is no secret (labkit's repository is public); their
inputs are. The instructor's installation makes a random secret at the first
`labkit assignment release` (or the first grading, if that comes first) and
keeps it beside the instructor's notebooks, in `.labkit-grading-secret`:
outside the release, git-ignored, and hidden from every student's kernel (the
box hides the instructor's notebook folder). Each exercise of each student is
then graded on inputs drawn from

    seed = HMAC-SHA256(secret, student, notebook, exercise)

so a student cannot know them from anything handed out, and a regrade draws the
same ones: a grade does not change unless the submission does. Where the
notebooks' folder is a fresh checkout (a CI job), LABKIT_GRADING_SECRET gives the
secret instead (a repository secret); it is never passed to a kernel.

Rotating the secret (delete the file, or set another LABKIT_GRADING_SECRET)
changes every student's inputs, and the next grading regrades the whole class.
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

FILE = ".labkit-grading-secret"
ENVIRONMENT = "LABKIT_GRADING_SECRET"


def path(notebooks):
    """The secret's file for the instructor's notebooks in the folder `notebooks`."""
    return Path(notebooks) / FILE


def make(notebooks):
    """Make the secret if there is none yet (from the environment or the file); True if this call made it.

    The file is created exclusively and readable by its owner only, so two gradings started together
    never make two different secrets."""
    if os.environ.get(ENVIRONMENT) or path(notebooks).exists():
        return False
    try:
        fd = os.open(path(notebooks), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as err:
        raise ValueError(f"cannot write the grading secret {path(notebooks)} ({err.strerror}); make that folder "
                         f"writable, or set {ENVIRONMENT} (docs/grading.md, Hidden inputs)") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return True


def load(notebooks):
    """The secret as bytes: LABKIT_GRADING_SECRET if set, else the file beside the notebooks (made if missing)."""
    given = os.environ.get(ENVIRONMENT, "").strip()
    if given:
        return given.encode()
    if make(notebooks):
        print(f"labkit: made the grading secret {path(notebooks)}: keep it (regrades draw the same hidden inputs "
              f"from it) and never hand it out")
    text = path(notebooks).read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path(notebooks)} holds no secret (under 32 characters); delete it and a new one is made")
    return text.encode()


def seed(secret, student, notebook, exercise):
    """The seed of the hidden checks' inputs for one exercise of one student (64 bits of an HMAC)."""
    message = "\0".join((student, notebook, exercise)).encode()
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8], "big") >> 1


def fingerprint(secret):
    """A short public name of the secret (a hash), to notice that it changed; tells nothing about the inputs."""
    return hashlib.sha256(b"labkit grading secret\0" + secret).hexdigest()[:12]
