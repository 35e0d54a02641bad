"""Error types shared by every stage.

User errors (a bad cluster file, a bad argument, broken persisted secrets) carry
enough location to be fixed without reading code; the CLI turns them into exit
code 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# C0, DEL and C1: characters a terminal may act on rather than print.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input, located as precisely as we can."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        # One problem, one line: keys and values from the file may hold line breaks and other control characters.
        return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


class UserError(Exception):
    """Invalid user input; reported with exit code 2."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SecretsError(UserError):
    """Persisted secrets on disk are unusable (corrupt PEM, key/cert mismatch, foreign CA).

    Raised before anything is written, so the assets directory is left as it was.
    """

    def __init__(self, file: str, message: str):
        super().__init__(Problem(file=file, line=None, path="", message=message))


class RunFailed(Exception):
    """The work ran, and what it ran reported a failure (a machine that did not come up, say).

    Not a user error and not a bug: the CLI prints the message as it is, over several lines if need be, and exits 1.
    """

    exit_code = 1
