"""Reading the Dockerfile: its stages and their instructions, as Docker reads them."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def one(self, keyword: str) -> str:
        (args,) = self.all(keyword)
        return args

    def env(self) -> dict[str, str]:
        pairs = [item.split("=", 1) for args in self.all("ENV") for item in shlex.split(args)]
        return {key: value for key, value in pairs}

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON list of CMD (or HEALTHCHECK's CMD); fails on the shell form."""
        args = self.one(keyword)
        if keyword == "HEALTHCHECK":
            args = args.split(" CMD ", 1)[1]
        command = json.loads(args)
        assert isinstance(command, list), f"{keyword} is not in exec form: {args}"
        return [str(part) for part in command]


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def stages(path: Path) -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in instructions(path.read_text()):
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            current = found[name.strip()] = Stage(name.strip(), base.strip())
        elif current is not None:
            current.instructions.append((keyword, args))
    return found


def build_commands(path: Path) -> dict[str, str]:
    """``{target: image}`` from the ``docker build --target T -t IMAGE .`` lines of the header."""
    commands = re.findall(r"docker build --target (\S+) -t (\S+) \.", path.read_text())
    return dict(commands)
