"""Error types shared by every stage.

User errors (a bad cluster file, a bad argument, broken persisted secrets) carry
enough location to be fixed without reading code; the CLI turns them into exit
code 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        # One problem, one line: keys and values from the file may hold line breaks.
        return text.replace("\r", "\\r").replace("\n", "\\n")


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
