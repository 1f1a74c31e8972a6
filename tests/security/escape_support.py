"""Helpers of the escape tests (importable as `escape_support`: pytest puts tests/security on sys.path)."""
from __future__ import annotations

from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from serving.cli import app

SECRET_TEXT = "TOPSECRET-4f1d"
ORDERS_CSV = (
    "customer_id,order_id,order_ts,amount\n"
    "a,1,2024-01-05,10\n"
    "a,2,2024-02-05,12\n"
    "b,3,2024-03-01,30\n"
)
CUSTOMERS_CSV = "customer_id,signup_ts,region\na,2023-12-01,North\nb,2024-01-01,South\nc,2024-02-01,North\n"
AS_OF = "2024-06-01"


def run(*args: str) -> Result:
    """`lifetag ARGS` in process, as a user runs it."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_paragraph_error(done: Result) -> str:
    """The single `error: ...` line of a run that exited 2 without a traceback."""
    assert done.exit_code == 2, f"{done.output}\n{done.exception!r}"
    assert isinstance(done.exception, SystemExit), f"not a handled error: {done.exception!r}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def assert_nothing_leaked(folder: Path, secret: Path, *texts: str) -> None:
    """No file under `folder` but the secret holds its text (outputs, quarantine, leak targets), nor any of `texts`."""
    for path in folder.rglob("*"):
        if path.is_file() and path != secret:
            assert SECRET_TEXT.encode() not in path.read_bytes(), f"the secret leaked into {path}"
    for text in texts:
        assert SECRET_TEXT not in text, "the secret leaked into a message"


def write_config(folder: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(text)
    return path
