"""Bad input, end to end: every malformed input and hostile config of issue 17 (and the earlier ones) through the CLI.

    .venv/bin/python -m benchmarks.bad_input [--out table.md] [--only NAME ...] [--jobs N]

Each case builds tiny files in a temporary folder, runs the real `lifetag` command in a subprocess
and reports one Markdown row: exit code, the first line of the message, rows used / quarantined
(from the CLI's "read N = used U + quarantined Q"), whether a traceback was printed, whether the
inputs are byte-for-byte intact, and whether a secret file's text escaped (into any output, or a
leak file was created). The figures are printed as they are: a case that shows a bug shows it.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CASES", "Case", "Outcome", "main", "run_case", "table", "table_row"]

SECRET = "LIFETAG-SECRET-7f3a9c"
HEADER = "customer_id,order_id,order_ts,amount\n"
_SUMMARY = re.compile(r"read ([\d,]+) = used ([\d,]+) \+ quarantined ([\d,]+)")
_TIMEOUT_SECONDS = 300


@dataclass
class Setup:
    """What a case's builder made: the command's arguments (after `lifetag`), its inputs, a second concurrent run."""

    args: list[str]
    inputs: list[Path] = field(default_factory=list)
    concurrent: list[str] | None = None  # run at the same time as `args` (same folder)


@dataclass(frozen=True)
class Case:
    """One bad input: a name, the issue item it comes from, and a builder writing its files into a folder."""

    name: str
    item: str
    build: Callable[["Workspace"], Setup]
    needs_model: bool = False


@dataclass
class Outcome:
    """What one case did."""

    case: Case
    command: str
    exit_code: int
    message: str
    rows: str
    traceback: bool
    intact: bool
    escaped: bool
    seconds: float


@dataclass
class Workspace:
    """A case's folder, with the shared shop (and LIFETAG_HOME holding a trained model) of the whole run."""

    folder: Path
    shop: Path | None = None
    home: Path | None = None

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def orders(self, body: str, name: str = "orders.csv", header: str = HEADER) -> Path:
        return self.write(name, header + body)

    def config(self, yaml_text: str) -> Path:
        return self.write("config.yaml", yaml_text)

    @property
    def secret(self) -> Path:
        return self.folder / "secret" / "secret.csv"

    @property
    def leak(self) -> Path:
        return self.folder / "leak.csv"


GOOD = "a,1,2024-01-01 10:00,10\nb,2,2024-01-02 11:00,20\nc,3,2024-01-03 12:00,30\n"


def _features(ws: Workspace, orders: Path | str, *extra: str, out: str = "features.csv") -> list[str]:
    return ["features", "--orders", str(orders), "--as-of", "2024-02-01", "--out", str(ws.folder / out), *extra]


def _simple(body: str, header: str = HEADER, *extra: str) -> Callable[[Workspace], Setup]:
    def build(ws: Workspace) -> Setup:
        path = ws.orders(body, header=header)
        return Setup(_features(ws, path, *extra), [path])
    return build


# --- earlier cases (README "Bad input", tests/features/test_intake.py) ---

def _missing_file(ws: Workspace) -> Setup:
    return Setup(_features(ws, ws.folder / "nowhere.csv"))


def _empty_file(ws: Workspace) -> Setup:
    path = ws.write("orders.csv", "")
    return Setup(_features(ws, path), [path])


# --- item 1-4: a config reads or writes other files ---

def _memory_limit_injection(ws: Workspace) -> Setup:
    path = ws.orders(GOOD)
    cfg = ws.config(f"engine:\n  memory_limit: \"2GB'; COPY (SELECT content FROM read_text('{ws.secret}')) TO "
                    f"'{ws.leak}'; SET memory_limit = '2GB\"\n")
    return Setup(_features(ws, path, "--config", str(cfg)), [path, cfg])


def _sniff_csv_expression(ws: Workspace) -> Setup:
    path = ws.orders(GOOD)
    cfg = ws.config(
        "orders:\n  columns:\n    customer_id: \"customer_id || (SELECT Columns FROM sniff_csv("
        f"'{ws.secret}', skip=1, header=true))::VARCHAR\"\n"
        f"engine:\n  temp_directory: {ws.secret.parent}\n")
    return Setup(_features(ws, path, "--config", str(cfg)), [path, cfg])


def _duckdb_view_reads_a_file(ws: Workspace) -> Setup:
    import duckdb

    db = ws.folder / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(f"CREATE VIEW orders AS SELECT (SELECT content FROM read_text('{ws.secret}')) AS customer_id, "
                    "'1' AS order_id, TIMESTAMP '2024-01-01' AS order_ts, 1.0 AS amount")
    return Setup(_features(ws, db), [db])


def _scenario_statements(ws: Workspace) -> Setup:
    orders = ws.shop / "orders.parquet"
    cfg = ws.config("scoring:\n  scenarios:\n    sneaky: \"true; COPY (SELECT content FROM read_text("
                    f"'{ws.secret}')) TO '{ws.leak}'\"\n")
    return Setup(["score", "--orders", str(orders), "--as-of", "2024-12-01", "--out", str(ws.folder / "tags.parquet"),
                  "--config", str(cfg)], [cfg])


# --- item 5: an output that is an input ---

def _out_is_input(ws: Workspace) -> Setup:
    path = ws.orders(GOOD)
    return Setup(["features", "--orders", str(path), "--as-of", "2024-02-01", "--out", str(path)], [path])


def _quarantine_is_input(ws: Workspace) -> Setup:
    path = ws.orders(GOOD + "d,4,2024-01-04,abc\n")
    return Setup(_features(ws, path, "--quarantine", str(path)), [path])


def _quarantine_is_out(ws: Workspace) -> Setup:
    path = ws.orders(GOOD + "d,4,2024-01-04,abc\n")
    out = ws.folder / "features.csv"
    return Setup(_features(ws, path, "--quarantine", str(out)), [path])


# --- item 6: a path names exactly one file or folder ---

def _glob_name(ws: Workspace) -> Setup:
    other = ws.orders("other,9,2024-01-01,999\n", name="x1.csv")
    path = ws.orders(GOOD, name="x[1].csv")
    return Setup(_features(ws, path), [path, other])


def _mixed_folder(ws: Workspace) -> Setup:
    ws.orders(GOOD, name="lake/a.csv")
    import pandas as pd

    pd.DataFrame({"customer_id": ["z"], "order_id": ["9"], "order_ts": [pd.Timestamp("2024-01-05")],
                  "amount": [5.0]}).to_parquet(ws.folder / "lake" / "b.parquet")
    return Setup(_features(ws, ws.folder / "lake"), [ws.folder / "lake" / "a.csv", ws.folder / "lake" / "b.parquet"])


# --- item 7: time-zone-aware Parquet ---

def _tz_parquet(ws: Workspace) -> Setup:
    import pandas as pd

    path = ws.folder / "orders.parquet"
    pd.DataFrame({"customer_id": ["a", "b"], "order_id": ["1", "2"], "amount": [1.0, 2.0],
                  "order_ts": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 10:00"]).tz_localize("Europe/Berlin")}
                 ).to_parquet(path)
    return Setup(_features(ws, path), [path])


# --- item 11, 12: dates ---

def _future_date_train(ws: Workspace) -> Setup:
    import pandas as pd

    frame = pd.read_parquet(ws.shop / "orders.parquet")
    frame.loc[frame.index[0], "order_ts"] = pd.Timestamp("2099-01-01")
    path = ws.folder / "orders.parquet"
    frame.to_parquet(path)
    return Setup(["train", "--orders", str(path), "--trials", "0"], [path])


def _as_of_before_first(out: str) -> Callable[[Workspace], Setup]:
    def build(ws: Workspace) -> Setup:
        path = ws.orders(GOOD)
        return Setup(["features", "--orders", str(path), "--as-of", "2020-01-01", "--out", str(ws.folder / out)], [path])
    return build


# --- item 13: tracebacks ---

def _memory_limit_lots(ws: Workspace) -> Setup:
    path = ws.orders(GOOD)
    cfg = ws.config("engine:\n  memory_limit: lots\n")
    return Setup(_features(ws, path, "--config", str(cfg)), [path, cfg])


def _quote_in_out(ws: Workspace) -> Setup:
    # A DuckDB output (only `score` writes one): the file name's quote must not end a SQL string.
    return Setup(["score", "--orders", str(ws.shop / "orders.parquet"), "--as-of", "2024-12-01",
                  "--out", f"{ws.folder}/it's.duckdb::t"])


def _latin1(ws: Workspace) -> Setup:
    path = ws.write("orders.csv", (HEADER + "a,1,2024-01-01,1\nJos\xe9,2,2024-01-02,2\n").encode("latin-1"))
    return Setup(_features(ws, path), [path])


def _huge_field(ws: Workspace) -> Setup:
    path = ws.folder / "orders.csv"
    with path.open("w") as handle:
        handle.write(HEADER + "a,1,2024-01-01,1\nb,2,2024-01-02,2\nc,3,2024-01-03,")
        chunk = "9" * 1_000_000
        for _ in range(100):
            handle.write(chunk)
        handle.write("\nd,4,2024-01-04,4\n")
    return Setup(_features(ws, path), [path])


# --- item 14: two scores to one output at once ---

def _concurrent_scores(ws: Workspace) -> Setup:
    args = ["score", "--orders", str(ws.shop / "orders.parquet"), "--as-of", "2024-12-01",
            "--out", str(ws.folder / "tags.parquet")]
    return Setup(args, concurrent=list(args))


CASES: list[Case] = [
    Case("missing required column", "earlier", _simple("a,1,2024-01-01,1\n", "customer_id,order_id,order_ts,total\n")),
    Case("non-numeric amount", "earlier", _simple("a,1,2024-01-01,abc\nb,2,2024-01-02,\n")),
    Case("non-numeric amount, --quarantine", "earlier", lambda ws: _simple(
        "a,1,2024-01-01,abc\n" + GOOD.replace("a,1", "e,5"), HEADER, "--quarantine", str(ws.folder / "bad.csv"))(ws)),
    Case("unparsable date", "earlier", _simple("a,1,yesterday,1\nb,2,2024-13-45,2\n")),
    Case("empty customer id", "earlier", _simple(" ,1,2024-01-01,1\nb,2,2024-01-02,2\n")),
    Case("order lines disagree on customer", "earlier", _simple("a,1,2024-01-01,1\nb,1,2024-01-01,2\n")),
    Case("empty file (0 bytes)", "earlier", _empty_file),
    Case("header only", "earlier", _simple("")),
    Case("missing file", "earlier", _missing_file),
    Case("memory_limit SQL injection (COPY secret)", "1", _memory_limit_injection),
    Case("sniff_csv in an expression + temp_directory", "2", _sniff_csv_expression),
    Case("DuckDB input whose view reads a file", "3", _duckdb_view_reads_a_file),
    Case("scenario with ; COPY statement", "4", _scenario_statements, needs_model=True),
    Case("--out equal to --orders", "5", _out_is_input),
    Case("--quarantine equal to --orders", "5", _quarantine_is_input),
    Case("--quarantine equal to --out", "5", _quarantine_is_out),
    Case("glob characters: x[1].csv beside x1.csv", "6", _glob_name),
    Case("folder with Parquet and CSV files", "6", _mixed_folder),
    Case("time-zone-aware Parquet timestamps", "7", _tz_parquet),
    Case("invoice lines a minute apart", "9", _simple("a,1,2024-01-01 12:28,1\na,1,2024-01-01 12:29,2\nb,2,2024-01-02,3\n")),
    Case("identical duplicate lines", "10", _simple("a,1,2024-01-01,10\na,1,2024-01-01,10\nb,2,2024-01-02,20\n")),
    Case("NULL-like customer ids", "10", _simple("NULL,1,2024-01-01,1\nnan,2,2024-01-02,1\nNone,3,2024-01-03,1\n"
                                                 "b,4,2024-01-04,1\n")),
    Case("trailing-space customer ids", "10", _simple("A1,1,2024-01-01,1\nA1 ,2,2024-01-02,1\n")),
    Case("unknown statuses", "10", _simple("a,1,2024-01-01,5,refunded\nb,2,2024-01-02,5,cancelled \nc,3,2024-01-03,5,\n",
                                           "customer_id,order_id,order_ts,amount,status\n")),
    Case("an order dated 2099 (features)", "11", _simple("a,1,2099-01-01,1\n" + GOOD.replace("a,1", "e,5"))),
    Case("an order dated 2099 (train, default as_of)", "11", _future_date_train, needs_model=True),
    Case("--as-of before the first order (Parquet out)", "12", _as_of_before_first("features.parquet")),
    Case("--as-of before the first order (CSV out)", "12", _as_of_before_first("features.csv")),
    Case("amount 1e300", "13", _simple("a,1,2024-01-01,1e300\n" + GOOD.replace("a,1", "e,5"))),
    Case("memory_limit: lots", "13", _memory_limit_lots),
    Case("--out \"it's.duckdb::t\"", "13", _quote_in_out, needs_model=True),
    Case("Latin-1 CSV", "13", _latin1),
    Case("ragged rows", "13", _simple("a,1,2024-01-01,1\nb,2,2024-01-02\nc,3,2024-01-03,3,9\n")),
    Case("a 100 MB field", "13", _huge_field),
    Case("CSV with a BOM and CRLF line ends", "13", lambda ws: Setup(
        _features(ws, p := ws.write("orders.csv", b"\xef\xbb\xbf" + (HEADER + GOOD).replace("\n", "\r\n").encode())), [p])),
    Case("blank header line", "13", _simple(GOOD, "\n")),
    Case("two scores to one output at once", "14", _concurrent_scores, needs_model=True),
]


def lifetag_command() -> list[str]:
    """The `lifetag` console script beside this interpreter, else `python -m serving.cli`."""
    script = Path(sys.executable).with_name("lifetag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "serving.cli"]


def _digest(paths: list[Path]) -> dict[Path, str | None]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None for p in paths}


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*lifetag_command(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)


def _environment(ws: Workspace) -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    env["LIFETAG_HOME"] = str(ws.home or ws.folder / ".lifetag")
    return env


def run_case(case: Case, ws: Workspace) -> Outcome:
    """Build the case's files in `ws.folder`, run its command, and judge what happened."""
    ws.secret.parent.mkdir(parents=True, exist_ok=True)
    ws.secret.write_text(f"secret\n{SECRET}\n")
    setup = case.build(ws)
    before = _digest(setup.inputs + [ws.secret])
    began = time.perf_counter()
    env = _environment(ws)
    procs = [_run(setup.args, env, ws.folder)]
    if setup.concurrent is not None:
        procs.append(_run(setup.concurrent, env, ws.folder))
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += f"\n(killed after {_TIMEOUT_SECONDS} s)"
        outputs.append((proc.returncode, out, err))
    seconds = time.perf_counter() - began
    intact = _digest(setup.inputs + [ws.secret]) == before
    text = "".join(out + err for _, out, err in outputs)
    code = ",".join(str(c) for c, _, _ in outputs)
    message = _first_message(outputs).replace(str(ws.folder) + os.sep, "")
    shown = " ".join(["lifetag", *setup.args]).replace(str(ws.folder) + os.sep, "")
    if setup.concurrent is not None:
        shown += " (twice, at once)"
    return Outcome(case, shown, code if len(outputs) > 1 else outputs[0][0], message, _rows(text),
                   "Traceback (most recent call last)" in text, intact, _escaped(ws, text), seconds)


def _first_message(outputs: list[tuple[int, str, str]]) -> str:
    """The error line of the first failed run, else the first line of output."""
    for code, out, err in outputs:
        if code != 0:
            lines = [line.strip() for line in (err + "\n" + out).splitlines() if line.strip()]
            for line in lines:
                if line.startswith("error:") or "Error" in line:
                    return line
            return lines[-1] if lines else ""
    for _, out, err in outputs:
        lines = [line.strip() for line in (out + "\n" + err).splitlines() if line.strip()]
        if lines:
            return lines[0]
    return ""


def _rows(text: str) -> str:
    found = _SUMMARY.search(text.replace("\n", " "))
    return f"{found.group(2)} / {found.group(3)}" if found else ""


def _escaped(ws: Workspace, text: str) -> bool:
    """A secret's text in the command's output, or in any file it wrote, or a leak file created."""
    if SECRET in text or ws.leak.exists():
        return True
    for path in ws.folder.rglob("*"):
        if path.is_file() and path != ws.secret and path.stat().st_size < 50_000_000:
            if SECRET.encode() in path.read_bytes():
                return True
    return False


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_row(outcome: Outcome, message_chars: int = 160) -> str:
    """One Markdown row: case | command | exit code | message | used / quarantined | traceback | intact | escape."""
    message = outcome.message if len(outcome.message) <= message_chars else outcome.message[:message_chars] + "..."
    cells = [f"{outcome.case.name} ({outcome.case.item})", f"`{outcome.command}`", outcome.exit_code, message,
             outcome.rows, "yes" if outcome.traceback else "no", "yes" if outcome.intact else "NO",
             "YES" if outcome.escaped else "no"]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def table(outcomes: list[Outcome]) -> str:
    """The Markdown table of all outcomes, with a closing line of totals."""
    lines = ["| case (issue item) | command | exit code | first line of message | rows used / quarantined "
             "| traceback? | input intact? | escape? |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [table_row(o) for o in outcomes]
    tracebacks = sum(o.traceback for o in outcomes)
    destroyed = sum(not o.intact for o in outcomes)
    escapes = sum(o.escaped for o in outcomes)
    lines.append("")
    lines.append(f"{len(outcomes)} cases: {escapes} escapes, {destroyed} destroyed inputs, {tracebacks} tracebacks.")
    return "\n".join(lines)


def _generate_shop(folder: Path, home: Path) -> None:
    """A small generated shop, and a model trained on it (for the score and train cases).

    `--promote`: 300 customers and no tuning may lose to the baselines, which would leave no champion.
    """
    env = dict(os.environ, LIFETAG_HOME=str(home))
    done = subprocess.run(lifetag_command() + ["generate", "--out", str(folder), "--seed", "3", "--start", "2023-01-01",
                                               "--end", "2024-11-30", "--n-customers", "300"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"lifetag generate failed: {done.stderr.strip()[-2000:]}")
    done = subprocess.run(lifetag_command() + ["train", "--orders", str(folder / "orders.parquet"), "--as-of",
                                               "2024-12-01", "--trials", "0", "--promote"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"note: training the shared model failed (exit {done.returncode}); score cases will show it",
              file=sys.stderr)


def run_all(cases: list[Case], jobs: int = 2) -> list[Outcome]:
    """Run `cases` (each in its own temporary folder), `jobs` at a time; outcomes in the cases' order."""
    with tempfile.TemporaryDirectory(prefix="lifetag-bad-input-") as scratch:
        root = Path(scratch)
        shop = home = None
        if any(c.needs_model for c in cases):
            shop, home = root / "shop", root / "home"
            _generate_shop(shop, home)

        def one(indexed: tuple[int, Case]) -> Outcome:
            i, case = indexed
            folder = root / f"case-{i:02d}"
            folder.mkdir()
            # Cases that train get a copy of the shared home, so they cannot change the others' champion.
            case_home = None
            if case.needs_model and home is not None:
                case_home = folder / ".lifetag"
                shutil.copytree(home, case_home)
            return run_case(case, Workspace(folder, shop, case_home))

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(one, enumerate(cases)))


def main(argv: list[str] | None = None) -> None:
    """Run the cases and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    parser.add_argument("--only", nargs="*", help="run only cases whose name contains one of these words")
    parser.add_argument("--jobs", type=int, default=max(2, os.cpu_count() or 2),
                        help="cases run at once (default: the number of cores, at least 2)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or any(w.lower() in c.name.lower() for w in args.only)]
    began = time.perf_counter()
    outcomes = run_all(cases, args.jobs)
    text = table(outcomes) + f" Run time {time.perf_counter() - began:.0f} s."
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
