"""The `lifetag` command line: generate a shop, build features (and, in later waves, train and score)."""
from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.errors import LifetagError
from configs.schema import ConfigError, load_config

# Heavy libraries (pandas, DuckDB, LightGBM, MLflow, scikit-learn, Optuna, matplotlib) are imported
# inside the commands that need them: `--help`, `--version` and a bad input answer in well under a second.

EXIT_CODES = ("Exit codes: 0 done; 2 bad input or config (one paragraph on stderr saying what to fix); "
              "1 a bug in lifetag (please report it with the traceback).")

app = typer.Typer(
    name="lifetag",
    help="Predictive customer tags (churn risk, repurchase, LTV, RFM, lifecycle) from order histories.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Width rich uses when a stream is a file or a pipe (CI logs, `> run.log`): wide enough that no table
# column is cut; tables only take the width they need. COLUMNS, when set, still decides.
_PIPED_WIDTH = 400


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    wide = not terminal and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=_PIPED_WIDTH if wide else None, soft_wrap=not terminal)


console = _console(stderr=True)
out = _console(stderr=False)

EXIT_BAD_INPUT = 2
F = TypeVar("F", bound=Callable[..., Any])

def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"lifetag {version('lifetag')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print lifetag's version and exit.")] = False,
) -> None:
    """Options given before the command (--version); the app's help text is set on `app`."""


def friendly_errors(command: F) -> F:
    """Turn input and config mistakes into one paragraph on stderr and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LifetagError as exc:
            # Escaped: a message naming `x[1].csv` or `pip install 'lifetag[spark]'` is text, not rich markup.
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]


def _parse_day(value: str, option: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"{option} '{value}' is not a date; write it as YYYY-MM-DD, e.g. 2025-01-01.") from None


class PlainProgress:
    """Progress for logs and CI, where rich's live display shows nothing: plain lines on stderr.

    A line when a stage starts or changes, at most every `every_s` seconds while it runs, and when
    it completes, e.g. `[12 s] Tuning churn (binary): 3/8`. Nothing in the first `quiet_s`
    seconds, so a quick run (or a quick error) prints only its result.
    """

    def __init__(self, unit: str = "", every_s: float = 5.0, quiet_s: float = 2.0) -> None:
        self.unit, self.every_s, self.quiet_s = unit, every_s, quiet_s
        self.began = time.perf_counter()
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None) -> int:
        self.tasks.append({"description": description, "total": total, "completed": 0, "shown": 0.0})
        self._line(len(self.tasks) - 1)
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, advance: float = 0, description: str | None = None) -> None:
        task = self.tasks[task_id]
        task["completed"] += advance
        renamed = description is not None and description != task["description"]
        if renamed:
            task["description"] = description
        done = bool(task["total"]) and task["completed"] >= task["total"]
        if renamed or done or time.perf_counter() - task["shown"] >= self.every_s:
            self._line(task_id)

    def _line(self, task_id: int) -> None:
        task = self.tasks[task_id]
        if time.perf_counter() - self.began < self.quiet_s:
            return
        task["shown"] = time.perf_counter()
        count = f": {task['completed']:,.0f}/{task['total']:,.0f}{self.unit}" if task["total"] else ""
        console.print(f"[{task['shown'] - self.began:.0f} s] {task['description']}{count}", markup=False, highlight=False)


def _progress(unit: str = "") -> Progress | PlainProgress:
    """A live progress bar on a terminal; plain lines when stderr is a file or a pipe."""
    if not console.is_terminal:
        return PlainProgress(unit)
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}" + unit), TimeElapsedColumn(), console=console, transient=True,
    )


def _check_paths(orders: Path, customers: Path | None, customers_option: str, config_path: Path | None,
                 quarantine: Path | None, out_path: str | Path | None = None, model: str | None = None) -> None:
    """Refuse, before anything is read, any output that would overwrite or sit inside an input."""
    from features.paths import check_outputs_apart, customers_quarantine

    inputs: dict[str, Any] = {"--orders": orders, customers_option: customers, "--config": config_path}
    if model is not None and ":/" not in model:  # a bundle folder, not a models:/ or runs:/ URI
        inputs["--model"] = model
    outputs: dict[str, Any] = {"--quarantine": quarantine}
    if quarantine is not None and customers is not None:
        outputs["--quarantine (its customers file)"] = customers_quarantine(quarantine)
    outputs["--out"] = out_path
    check_outputs_apart(inputs, outputs)


# Options several commands share.
OrdersOption = Annotated[Path, typer.Option("--orders", help="Order history: CSV, Parquet file or folder, or DuckDB file[:table].")]
CustomersOption = Annotated[Path | None, typer.Option(
    "--customers", help="Customers table (CSV, Parquet file or folder, DuckDB file[:table]): attributes and sign-ups.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML merged over the defaults.")]
QuarantineOption = Annotated[Path | None, typer.Option(
    "--quarantine", help="Write bad rows here (with a reason) instead of stopping.")]


ENGINE_HELP = "local (embedded DuckDB, the default) or spark (PySpark: pip install 'lifetag[spark]'; Java 17)."
SparkMasterOption = Annotated[str | None, typer.Option(
    "--spark-master", help="With --engine spark: the Spark master URL (default: spark-submit's, else local[*]).")]


def _check_engine(engine: str, spark_master: str | None) -> None:
    """--engine is local or spark; --spark-master only goes with spark."""
    if engine not in ("local", "spark"):
        raise ConfigError(f"--engine {engine!r} is not available; the engines are: local, spark.")
    if spark_master is not None and engine != "spark":
        raise ConfigError("--spark-master goes with --engine spark; add it, or leave --spark-master out.")


# Listed here rather than read from features.synthetic.SHAPES, so that `--help` does not load numpy and
# pandas; a test checks the two agree.
SHAPE_HELP = ("Kind of shop: default (moderate Nov-Dec season, 1-4 lines per order, returns); gift (online gift "
              "retailer's invoices: strong Q4 peak, ~13 lines per invoice, wholesale buyers, cancellations C<id>); "
              "flat (no season, mostly one line); wholesale (5% business accounts on reorder cycles); "
              "fast_fashion (frequent orders, ~20% of lines returned).")


@app.command(epilog=EXIT_CODES)
@friendly_errors
def generate(
    n_customers: Annotated[int, typer.Option("--n-customers", min=1, help="Number of customers to simulate.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for orders.parquet, customers.parquet and shop.json.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same shop.")] = 0,
    start: Annotated[str, typer.Option(help="First day of the shop's history (YYYY-MM-DD).")] = "2022-01-01",
    end: Annotated[str, typer.Option(help="Last day of the shop's history (YYYY-MM-DD).")] = "2024-12-31",
    shape: Annotated[str, typer.Option(help=SHAPE_HELP)] = "default",
) -> None:
    """Write a realistic synthetic shop (order lines with returns, coupons, seasons; registered customers) to a folder."""
    from features.synthetic import shop_shape, write_shop

    _parse_day(start, "--start")
    _parse_day(end, "--end")
    shop = shop_shape(shape)
    began = time.perf_counter()
    with console.status(f"Simulating {n_customers:,} customers ({shop.name} shop)"):
        summary = write_shop(out_dir, n_customers=n_customers, seed=seed, start=start, end=end, shape=shop)
    money_back = f", {summary['returns']:,} returns" if summary["returns"] else ""
    if summary["cancellations"]:
        money_back += f", {summary['cancelled_orders']:,} cancellations"
    out.print(
        f"Wrote {out_dir / 'orders.parquet'}: {summary['customers']:,} customers ({shop.name} shape), "
        f"{summary['orders']:,} orders, {summary['lines']:,} lines{money_back}; "
        f"{out_dir / 'customers.parquet'}: {summary['registered']:,} registered, "
        f"{summary['never_bought']:,} never bought; in {time.perf_counter() - began:.1f} s"
    )


@app.command(epilog=EXIT_CODES)
@friendly_errors
def features(
    orders: OrdersOption,
    as_of: Annotated[str, typer.Option("--as-of", help="Cut-off day (YYYY-MM-DD); only orders before it are seen.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output file, .parquet or .csv.")],
    config_path: ConfigOption = None,
    quarantine: QuarantineOption = None,
    summary: Annotated[bool, typer.Option("--summary", help="Also print RFM segment counts.")] = False,
    customers: CustomersOption = None,
) -> None:
    """Build point-in-time behavioural features, one row per customer, and write them.

    With a customers table, buyers also get signup_days and the attributes, and registered customers
    who have not ordered before as_of get a row too (frequency 0, order features empty).
    """
    from features.behaviour import build_relation, registered_relation, require_orders_before, unmatched_customers
    from features.engine import connect
    from features.intake import open_sources
    from features.output import output_format, write_relation

    config = load_config(config_path)
    cut = _parse_day(as_of, "--as-of")
    output_format(out_path)
    customers_option = _customers_option(customers)
    customers = _customers_source(customers, config)
    _check_paths(orders, customers, customers_option, config_path, quarantine, out_path)
    began = time.perf_counter()
    con = connect(config.engine)
    with _progress() as progress:
        task = progress.add_task("Reading and validating orders" + (" and customers" if customers else ""), total=3)
        intake = open_sources(con, orders, config, customers, quarantine)
        require_orders_before(con, "orders", cut, str(orders))
        table = "customers" if intake.customers is not None else None
        progress.update(task, advance=1, description="Computing features")
        relation = build_relation(con, "orders", cut, config, table)
        if table:
            registered = registered_relation(con, "orders", table, cut, config).select("*, 0 AS frequency")
            relation = con.sql(f"SELECT * FROM ({relation.sql_query()}) UNION ALL BY NAME "
                               f"SELECT * FROM ({registered.sql_query()}) ORDER BY customer_id")
        progress.update(task, advance=1, description=f"Writing {out_path.name}")
        write_relation(con, relation, out_path)
        progress.update(task, advance=1, description="Done")
    unmatched = unmatched_customers(con, "orders", table, cut, config) if table else 0
    _print_features_summary(out_path, intake, cut, time.perf_counter() - began)
    for line in intake.notes():
        console.print(f"note: {line}")
    if unmatched:
        console.print(f"note: customers: {unmatched:,} buyers have no row in the customers table; their attributes are empty")
    if summary:
        _print_rfm_summary(out_path, config)


@app.command(epilog=EXIT_CODES)
@friendly_errors
def train(
    orders: OrdersOption,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Train on orders before this day (default: the day after the last order).")] = None,
    config_path: ConfigOption = None,
    trials: Annotated[int | None, typer.Option("--trials", min=0, help="Optuna trials per target (default from config).")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Make this version champion even if it scores lower.")] = False,
    quarantine: QuarantineOption = None,
    customers: CustomersOption = None,
    engine: Annotated[str, typer.Option("--engine", help=ENGINE_HELP + " Spark builds the training set; the models are fitted here.")] = "local",
    spark_master: SparkMasterOption = None,
) -> None:
    """Train churn, repurchase and LTV models, compare them with baselines, register them in MLflow."""
    from training.pipeline import fit_bundle
    from training.tracking import record_training

    _check_engine(engine, spark_master)
    config = load_config(config_path)
    cut = _parse_day(as_of, "--as-of") if as_of else None
    trials = config.training.trials if trials is None else trials
    customers_option = _customers_option(customers)
    customers = _customers_source(customers, config)
    _check_paths(orders, customers, customers_option, config_path, quarantine)
    began = time.perf_counter()
    with _progress() as progress:
        def stage(description: str, total: int) -> Callable[[], None]:
            task = progress.add_task(description, total=total)
            return lambda: progress.advance(task)

        training_set = None
        if engine == "spark":
            from training.spark_dataset import spark_training_set

            training_set = spark_training_set(master=spark_master)
        result = fit_bundle(orders, config, as_of=cut, trials=trials, quarantine=quarantine, progress=stage,
                            customers=customers, training_set=training_set)
        task = progress.add_task("Logging to MLflow and registering", total=1)
        recorded = record_training(result, promote, trials, config.training.promote_tolerance)
        progress.advance(task)
    out.print(f"Orders: {result.intake.summary()}; trained at as_of {result.as_of.date()} "
              f"on {result.fingerprint['customers']:,} customers in {time.perf_counter() - began:.0f} s")
    if result.customers is not None:
        out.print(f"Customers: {result.customers.customers.summary()}")
        for line in result.customers.notes():
            console.print(f"note: {line}")
        if result.unmatched_customers:
            console.print(f"note: customers: {result.unmatched_customers:,} buyers have no row in the customers "
                          "table; their attributes are empty")
    if result.first_purchase is not None:
        fp = result.first_purchase
        out.print(f"first_purchase_prob: {fp.note}" if fp.model is not None
                  else f"[yellow]first_purchase_prob will be empty[/]: {fp.note}")
    _print_training_table(result)
    for name, r in result.results.items():
        if r.fallback_reason:
            out.print(f"[yellow]{name}: BG/NBD + Gamma-Gamma fallback[/] ({r.fallback_reason})")
        if r.level == "candidates":
            out.print(f"{name}: level from the geometric mean of the {len(r.level_models)} fitted candidates' totals "
                      f"(x{r.model.scale:.3f})")
        elif r.level not in ("", "model"):
            check = r.level_check
            words = {"model": "the model's own", "bgnbd": "BG/NBD + Gamma-Gamma's",
                     "offset": "the model boosted from BG/NBD's"}
            ratios = ", ".join(f"{words[k]} {check[k + '_total_ratio']:.3f}" for k in words
                               if k + "_total_ratio" in check)
            out.print(f"{name}: level from {' and '.join(words[k] for k in r.level.split('+'))} total "
                      f"(x{r.model.scale:.3f}); over a {check['gap_days']:.0f}-day out-of-time gap the totals were, "
                      f"of actual: {ratios}")
        if r.target.kind == "regressor" and r.chosen:
            out.print(f"{name}: {r.chosen} chosen" + (
                f" (normalised Gini {r.candidates[r.chosen]['gap_gini_normalised']:.3f} over the longest out-of-time "
                f"gap; BG/NBD + Gamma-Gamma {_bg_gap_gini(r):.3f})" if "gap_gini_normalised" in r.candidates.get(
                    r.chosen, {}) else ""))
        if r.rounds_check:
            out.print(_rounds_line(name, r.rounds_check))
    out.print(f"MLflow run {recorded.run_id}, model lifetag version {recorded.version}")
    out.print(recorded.promotion.reason)


@app.command(epilog=EXIT_CODES)
@friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything beyond loopback needs LIFETAG_API_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 3000,
    model: Annotated[str | None, typer.Option("--model", help="Model URI (default models:/lifetag@champion) or a bundle folder.")] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="A `lifetag score` output (Parquet, or FILE.duckdb::TABLE) for /tags lookups.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 1,
    config: ConfigOption = None,
) -> None:
    """Serve tags over HTTP: BentoML's own server running serving.service:LifetagService."""
    from features.engine import lifetag_home
    from serving.allocator import server_env
    from serving.bundle import load_model
    from serving.service import Snapshot

    if snapshot is not None:
        Snapshot.load(snapshot)  # a bad snapshot is a one-paragraph error here, not a failed worker later
    if config is not None:
        load_config(config)  # likewise a bad config
    load_model(model)  # and a model that is not there
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("LIFETAG_API_TOKEN"):
        console.print(f"note: serving on {host} without LIFETAG_API_TOKEN: anyone who can reach it can read tags")
    env = dict(os.environ)
    if model:
        env["LIFETAG_MODEL"] = str(Path(model).absolute()) if Path(model).is_dir() else model
    if snapshot is not None:
        path, sep, table = snapshot.partition("::")
        env["LIFETAG_SNAPSHOT"] = str(Path(path).resolve()) + sep + table
    if config is not None:
        env["LIFETAG_CONFIG"] = str(config.resolve())
    env["LIFETAG_WORKERS"] = str(workers)
    # One file per server, touched by the worker that reloads, so its other workers follow (serving.service).
    env["LIFETAG_RELOAD_STAMP"] = str((lifetag_home() / "service" / f"reload-{os.getpid()}").resolve())
    env, allocator = server_env(env)
    console.print(f"memory allocator of the workers: {allocator}")
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    # The server replaces this process, so signals (Ctrl-C, a supervisor's SIGTERM) reach BentoML directly.
    os.execvpe(bentoml, [bentoml, "serve", "serving.service:LifetagService", "--host", host, "--port", str(port)], env)


def _bg_gap_gini(result: Any) -> float:
    """BG/NBD + Gamma-Gamma's Gini over the same gap (its candidate's, present whenever the gap check ran)."""
    return next((v["gap_gini_normalised"] for k, v in result.candidates.items()
                 if k.startswith("bgnbd_gg") and "gap_gini_normalised" in v), float("nan"))


@app.command(epilog=EXIT_CODES)
@friendly_errors
def score(
    orders: OrdersOption,
    as_of: Annotated[str, typer.Option("--as-of", help="Score at this day (YYYY-MM-DD); only orders before it are seen.")],
    out_path: Annotated[str, typer.Option("--out", help="Output: .parquet, .csv, or FILE.duckdb::TABLE.")],
    model: Annotated[str | None, typer.Option("--model", help="Model URI (default models:/lifetag@champion) or a bundle folder.")] = None,
    config_path: ConfigOption = None,
    quarantine: QuarantineOption = None,
    engine: Annotated[str, typer.Option("--engine", help=ENGINE_HELP)] = "local",
    partitions: Annotated[int | None, typer.Option("--partitions", min=1, help="Customer hash partitions processed one at a time (bounds memory; same result). Default 1; on Spark one per ~100,000 order lines.")] = None,
    customers: CustomersOption = None,
    clusters: Annotated[bool, typer.Option("--clusters", help="Also tag each buyer's behavioural cluster (cluster, cluster_description; report.clusters_k).")] = False,
    spark_master: SparkMasterOption = None,
) -> None:
    """Tag every customer: churn risk, repurchase, LTV, tiers, RFM segment, lifecycle stage, reasons, scenarios."""
    from serving.scoring import output_target, score as run_score

    config = load_config(config_path)
    cut = _parse_day(as_of, "--as-of")
    _check_engine(engine, spark_master)
    if engine == "local":
        output_target(out_path)
    customers_option = _customers_option(customers)
    customers = _customers_source(customers, config)
    _check_paths(orders, customers, customers_option, config_path, quarantine, out_path, model)
    began = time.perf_counter()
    with _progress(" customers") as progress:
        def stage(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        if engine == "spark":
            from serving.spark import score_on_spark

            result = score_on_spark(str(orders), cut, out_path, config, model_uri=model, quarantine=quarantine,
                                    partitions=partitions, customers=customers, master=spark_master,
                                    clusters=clusters)
        else:
            result = run_score(orders, cut, out_path, config, model_uri=model, quarantine=quarantine,
                               partitions=partitions or 1, progress=stage, customers=customers, clusters=clusters)
    out.print(f"Orders: {result.intake.summary()}")
    if result.customers_intake is not None:
        out.print(f"Customers: {result.customers_intake.summary()}; {result.registered:,} registered without an "
                  "order before as_of are tagged `registered`")
    for line in result.notes:
        console.print(f"note: {line}")
    out.print(f"Scored {result.customers:,} customers at {cut.date()} with model {result.model_version} "
              f"-> {out_path} in {time.perf_counter() - began:.1f} s")
    _print_score_summary(result, config)


@app.command(epilog=EXIT_CODES)
@friendly_errors
def report(
    tags: Annotated[str, typer.Option("--tags", help="A `lifetag score` output: .parquet, .csv or FILE.duckdb::TABLE.")],
    orders: OrdersOption,
    out_path: Annotated[Path, typer.Option("--out", help="The report: one self-contained .html file.")],
    customers: CustomersOption = None,
    model: Annotated[str | None, typer.Option("--model", help="The model that scored the tags (default: the tags' model_version in the registry), or its bundle folder.")] = None,
    lang: Annotated[str, typer.Option("--lang", help="Language of the page: en or zh.")] = "en",
    config_path: ConfigOption = None,
) -> None:
    """Write the insight report (KPIs, RFM segments, lifecycle, value at risk, cohorts, clusters, model) as one
    HTML file that opens offline, and log it to the scoring model version's MLflow run."""
    from features.paths import check_outputs_apart
    from serving.report import STAGES, check_report_path, write_report

    config = load_config(config_path)
    customers_option = _customers_option(customers)
    customers = _customers_source(customers, config)
    inputs: dict[str, Any] = {"--tags": tags, "--orders": orders, customers_option: customers, "--config": config_path}
    if model is not None and ":/" not in model:
        inputs["--model"] = model
    check_outputs_apart(inputs, {"--out": out_path})
    check_report_path(out_path, lang)
    began = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(STAGES[0], total=len(STAGES))
        result = write_report(tags, orders, out_path, config, customers=customers, model_uri=model, lang=lang,
                              progress=lambda stage: progress.update(task, advance=1, description=stage))
    logged = f"; logged to MLflow as {result.logged}" if result.logged else f"; {result.note}"
    out.print(f"Report of {result.customers:,} customers at {result.as_of.date()} (model {result.model_version}) "
              f"-> {result.out} ({result.size_bytes / 1e6:.1f} MB) in {time.perf_counter() - began:.1f} s{logged}",
              highlight=False, soft_wrap=True)


def _print_score_summary(result: Any, config: Any) -> None:
    for column, frame, title in (("rfm_segment", result.summary_by_segment, "RFM segments"),
                                 ("lifecycle_stage", result.summary_by_stage, "Lifecycle stages")):
        table = Table(title=title)
        for name in (column.replace("_", " "), "customers", "share", "revenue share", "mean churn risk", "mean LTV"):
            table.add_column(name, justify="left" if name == column.replace("_", " ") else "right")
        if column == "rfm_segment":
            # Registered customers without an order have no RFM segment; the stages table shows them.
            frame = frame[frame[column].notna()]
        total = max(int(frame["customers"].sum()), 1)
        for row in frame.itertuples(index=False):
            key = getattr(row, column)
            label = config.rfm.segments[key].label if column == "rfm_segment" and key in config.rfm.segments else key
            table.add_row(str(label), f"{row.customers:,}", f"{row.customers / total:.1%}",
                          f"{(row.revenue_share or 0):.1%}", _figure(row.mean_churn_risk, "{:.3f}"),
                          _figure(row.mean_ltv, "{:,.2f}"))
        out.print(table)
    if result.scenario_counts:
        out.print("Scenario tags: " + ", ".join(f"{k} {v:,}" for k, v in result.scenario_counts.items()))


def _figure(value: Any, template: str) -> str:
    """A number for a summary table; an empty prediction (registered customers) shows as a dash."""
    return template.format(value) if value is not None and value == value else "-"


def _rounds_line(name: str, check: dict[str, float]) -> str:
    """'churn: 16 of 287 boosting rounds kept (...)': how much boosting survived the out-of-time check."""
    kept, tuned = int(check["rounds_kept"]), int(check["rounds_tuned"])
    where = (f"a {check['min_gap_days']:.0f}-day out-of-time gap, {int(check['folds'])} "
             f"fold{'s' if check['folds'] != 1 else ''}")
    loss = "Tweedie loss" if name == "ltv" else "log loss"
    losses = f"{loss} {check['loss_kept']:.4f} kept vs {check['loss_tuned']:.4f} with all rounds"
    if "loss_offset" in check:
        losses += f", {check['loss_offset']:.4f} for the BG/NBD offset alone"
    if kept == 0:
        return f"{name}: no boosting round beat the BG/NBD offset out of time ({where}; {losses}); the offset is kept"
    return f"{name}: {kept} of {tuned} boosting rounds kept ({where}; {losses})"


def _print_training_table(result: Any) -> None:
    table = Table(title=f"Validation (out of time) - score {result.score:.4f}")
    for column in ("target", "model", "ROC AUC", "PR AUC", "Brier", "ECE", "lift@10%", "Spearman", "Gini", "total pred/actual"):
        table.add_column(column, justify="left" if column in ("target", "model") else "right")
    keys = ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile", "spearman", "gini_normalised", "total_ratio")
    for name, r in result.results.items():
        for model, metrics in r.metrics.items():
            label = model if model != "model" else f"lifetag ({r.model.kind}{'' if r.model.offset == 'none' else ' + BG/NBD offset'})"
            cells = [f"{metrics[k]:.3f}" if k in metrics else "" for k in keys]
            table.add_row(f"{name} {r.target.horizon_days}d", label, *cells)
    out.print(table)


def _customers_option(customers: Path | None) -> str:
    """How the user named the customers table, for messages."""
    return "--customers" if customers is not None else "customers.source (in --config)"


def _customers_source(customers: Path | None, config: Any) -> Path | None:
    """--customers, else customers.source from the config, else none."""
    return customers if customers is not None else (Path(config.customers.source) if config.customers.source else None)


def _print_features_summary(out_path: Path, intake: Any, cut: datetime, seconds: float) -> None:
    import duckdb

    reader = "read_parquet" if out_path.suffix.lower() == ".parquet" else "read_csv"
    with duckdb.connect() as con:
        customers, buyers, orders_before = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE frequency > 0), sum(frequency) FROM {reader}(?)", [str(out_path)]
        ).fetchall()[0]
    out.print(f"Orders: {intake.orders.summary()}")
    if intake.customers is not None:
        out.print(f"Customers: {intake.customers.summary()}")
    registered = f", {customers - buyers:,} registered without an order" if intake.customers is not None else ""
    out.print(
        f"Features at {cut.date()} for {buyers:,} customers ({int(orders_before or 0):,} orders before the cut-off)"
        f"{registered} -> {out_path} in {seconds:.1f} s"
    )


def _print_rfm_summary(features_path: Path, config: Any) -> None:
    import pandas as pd

    from features.segments import RfmCutPoints, rfm_scores, rfm_segment

    frame = (pd.read_parquet(features_path) if features_path.suffix.lower() == ".parquet"
             else pd.read_csv(features_path, dtype={"customer_id": str}))
    frame = frame[frame["frequency"] > 0]  # registered customers without an order have no RFM
    scores = rfm_scores(frame, RfmCutPoints.fit(frame))
    segment = rfm_segment(scores, config.rfm)
    table = Table(title="RFM segments (cut points from this population)")
    for column in ("segment", "label", "customers", "share", "revenue share"):
        table.add_column(column, justify="right" if column != "segment" and column != "label" else "left")
    revenue = frame["monetary_total"].groupby(segment).sum()
    counts = segment.value_counts()
    total_revenue = frame["monetary_total"].sum() or 1.0
    for key, info in config.rfm.segments.items():
        n = int(counts.get(key, 0))
        table.add_row(key, f"{info.label} / {info.label_zh}", f"{n:,}", f"{n / len(frame):.1%}",
                      f"{revenue.get(key, 0.0) / total_revenue:.1%}")
    out.print(table)


@app.command(epilog=EXIT_CODES)
@friendly_errors
def campaign(
    assignments: Annotated[Path, typer.Option("--assignments", help="CSV or Parquet: customer_id, group (treatment/control), optional campaign.")],
    orders: OrdersOption,
    start: Annotated[str, typer.Option("--start", help="First day of the campaign window (YYYY-MM-DD); segments and tiers are taken at it.")],
    days: Annotated[int, typer.Option("--days", min=1, help="Length of the window in days: [start, start + days).")],
    out_path: Annotated[Path | None, typer.Option("--out", help="Write every figure to this JSON file.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Add (or replace) the campaign's section in this lifetag HTML report.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model URI (default models:/lifetag@champion) or a bundle folder.")] = None,
    treatment_share: Annotated[float | None, typer.Option("--treatment-share", help="Intended share of treated customers (default campaign.treatment_share, 0.5).")] = None,
    max_unknown_share: Annotated[float | None, typer.Option("--max-unknown-share", help="Refuse a campaign with more ids unknown to the orders and customers (default campaign.max_unknown_share, 0.01).")] = None,
    customers: CustomersOption = None,
    config_path: ConfigOption = None,
    quarantine: QuarantineOption = None,
) -> None:
    """Compare treated and control customers over a window: conversion, orders and spend per customer, with intervals."""
    from features.paths import check_outputs_apart
    from serving.campaign import evaluate, settings_with
    from serving.campaign_report import add_to_report, check_report, check_result_path, write_result

    config = load_config(config_path)
    cut = _parse_day(start, "--start")
    settings = settings_with(config, treatment_share, max_unknown_share)
    customers_option = _customers_option(customers)
    customers = _customers_source(customers, config)
    _check_paths(orders, customers, customers_option, config_path, quarantine, out_path, model)
    check_outputs_apart({"--assignments": assignments, "--orders": orders, customers_option: customers,
                         "--config": config_path, "--model": model if model and ":/" not in model else None},
                        {"--report": report, "--out": out_path, "--quarantine": quarantine})
    if out_path is not None:
        check_result_path(out_path)
    if report is not None:
        check_report(report)
    began = time.perf_counter()
    with console.status("Reading, tagging at the start and comparing"):
        run = evaluate(assignments, orders, cut, days, config, settings, model_uri=model, customers=customers,
                       quarantine=quarantine)
    out.print(f"Orders: {run.intake.orders.summary()}")
    for line in run.notes:
        console.print(f"note: {line}")
    for result in run.results:
        _print_campaign(result)
    if out_path is not None:
        write_result(run, out_path)
        out.print(f"Result -> {out_path}")
    if report is not None:
        for result in run.results:
            how = add_to_report(report, result)
            out.print(f"Campaign {result.campaign!r}: section {how} in {report}")
    out.print(f"Compared {len(run.results)} campaign{'s' if len(run.results) != 1 else ''} in "
              f"{time.perf_counter() - began:.1f} s")


def _print_campaign(result: Any) -> None:
    """A campaign's split, overall table, strata tables and notes."""
    from serving.campaign import MEASURE_LABELS, STRATA, format_figure, format_interval, format_p, split_warning

    split, window = result.split, result.window
    out.print(f"\n[bold]Campaign {result.campaign}[/]: {split.treatment:,} treatment, {split.control:,} control; window "
              f"{window.start.date()} to {window.last_day.date()} ({window.days} days); model {result.model_version}",
              highlight=False)
    if split.mismatch:
        out.print(f"[bold red]warning:[/] {split_warning(split)}", highlight=False)
    else:
        out.print(f"Split: {split.observed_share:.1%} treated, {split.intended_share:.1%} intended "
                  f"(chi-square {format_p(split.p_value)}): no sample-ratio mismatch", highlight=False)
    confidence = f"{result.settings.confidence:.0%}"
    table = Table(title=result.verdict, title_justify="left")
    for column in ("measure", "treatment", "control", "difference", f"{confidence} CI", "p", "lift", "verdict"):
        table.add_column(column, justify="left" if column in ("measure", "verdict") else "right")
    for m in result.overall:
        figures = m.to_dict()
        table.add_row(MEASURE_LABELS[m.name], format_figure(m.name, m.treatment_mean),
                      format_figure(m.name, m.control_mean), format_figure(m.name, figures["difference"], True),
                      format_interval(figures), format_p(figures["p_value"]) or "-",
                      f"{figures['relative_lift']:+.1%}" if figures["relative_lift"] is not None else "-", m.verdict)
    out.print(table)
    for by, title in STRATA.items():
        strata = Table(title=f"By {title}: conversion", title_justify="left")
        for column in ("stratum", "treatment", "control", "conversion T / C", "difference", f"{confidence} CI", "p",
                       "verdict", "spend difference"):
            strata.add_column(column, justify="left" if column in ("stratum", "verdict") else "right")
        for s in (s for s in result.strata if s.by == by):
            conv, spend = (m.to_dict() for m in s.measures if m.name in ("conversion", "spend"))
            strata.add_row(s.label, f"{s.treatment:,}", f"{s.control:,}",
                           f"{format_figure('conversion', conv['treatment'])} / "
                           f"{format_figure('conversion', conv['control'])}",
                           format_figure("conversion", conv["difference"], True), format_interval(conv, False),
                           format_p(conv["p_value"]) or "-", conv["verdict"],
                           format_figure("spend", spend["difference"], True))
        out.print(strata)
    for line in result.notes:
        out.print(f"note: {line}", highlight=False)



def main() -> None:
    """Console entry point."""
    app(prog_name="lifetag")


if __name__ == "__main__":
    sys.exit(main())
