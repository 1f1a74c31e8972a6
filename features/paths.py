"""Where a job's files are: no output may be an input, lie inside an input folder, or be another output.

Every command (features, train, score) calls `check_outputs_apart` before it reads anything, so a
mistyped `--out` or `--quarantine` can never delete or overwrite the orders, the customers table,
the config or a model. Paths are compared as the files they name: symbolic links are resolved, and
two names of one existing file (a hard link, a case-insensitive file system) are caught by
`os.path.samefile`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from configs.schema import ConfigError

__all__ = ["DUCKDB_SUFFIXES", "check_outputs_apart", "customers_quarantine", "file_part"]

# DuckDB sources are `shop.duckdb` or `shop.duckdb:table`; DuckDB outputs `tags.duckdb::table`.
DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")

PathArg = str | os.PathLike[str] | None


def customers_quarantine(quarantine: str | os.PathLike[str]) -> Path:
    """Where the customers table's bad rows go for `--quarantine PATH`: `.customers` before the extension."""
    path = Path(quarantine)
    return path.with_name(f"{path.stem}.customers{path.suffix}")


def file_part(path: str | os.PathLike[str]) -> Path:
    """The file a source or output names: `shop.duckdb:orders` and `tags.duckdb::tags` name the database file."""
    text = os.fspath(path)
    for suffix in DUCKDB_SUFFIXES:
        at = text.find(suffix + ":")
        if at >= 0:
            return Path(text[: at + len(suffix)])
    return Path(text)


def check_outputs_apart(inputs: Mapping[str, PathArg], outputs: Mapping[str, PathArg]) -> None:
    """Raise ConfigError if an output is an input, lies inside an input folder, or is another output.

    `inputs` and `outputs` map a name for the user (the option, e.g. "--orders") to a path or None
    (not given). Nothing is read or created: paths that do not exist yet are compared by name.
    """
    given_inputs = {name: (os.fspath(path), file_part(path)) for name, path in inputs.items() if path is not None}
    given_outputs = {name: (os.fspath(path), file_part(path)) for name, path in outputs.items() if path is not None}
    for out_name, (out_text, out_path) in given_outputs.items():
        for in_name, (in_text, in_path) in given_inputs.items():
            if _same_file(out_path, in_path):
                raise ConfigError(
                    f"{out_name} {out_text} is the same file as {in_name} {in_text}: writing it would destroy "
                    f"the input. Give {out_name} another file name."
                )
            if in_path.is_dir() and _inside(out_path, in_path):
                raise ConfigError(
                    f"{out_name} {out_text} is inside the {in_name} folder {in_text}: lifetag reads every file "
                    f"there, so the output would change the input of this and the next run. Write {out_name} "
                    "outside that folder."
                )
    names = list(given_outputs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if _same_file(given_outputs[first][1], given_outputs[second][1]):
                raise ConfigError(
                    f"{first} {given_outputs[first][0]} and {second} {given_outputs[second][0]} are the same file: "
                    f"one would overwrite the other. Give {second} another file name."
                )


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet, so they cannot be one file
        return False


def _inside(path: Path, folder: Path) -> bool:
    real_folder = Path(os.path.realpath(folder))
    real_path = Path(os.path.realpath(path))
    if real_path.is_relative_to(real_folder):
        return True
    # The output's folder may be the input folder under another name (a bind mount, a hard-linked tree).
    parent = real_path.parent
    while True:
        try:
            if os.path.samefile(parent, real_folder):
                return True
        except OSError:
            pass
        if parent == parent.parent:
            return False
        parent = parent.parent
