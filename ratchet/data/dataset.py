"""Read a user's raw transactions with Spark and give them ratchet's canonical columns.

The training spec's ``dataset.columns`` maps canonical names to the user's names; this
module reads the file (Parquet file, directory or glob; or CSV), renames and casts the
columns, derives ``label_available_at`` from ``dataset.label_delay_days`` when the data
lacks it, and says exactly what is missing when something is. Nothing here runs a Spark
job except CSV header discovery; counting happens once, in the training-set job.

    tx = read_transactions(spark, "data/transactions.parquet", spec)
    df = apply_filters(tx.df, spec.filters)
"""

from __future__ import annotations

import glob as globmod
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ratchet.data import columns as C
from ratchet.errors import DataCheckError, MissingColumnError, RatchetError
from ratchet.data.spec import DataSpec, Filter, feature_needs

#: Spark type of every canonical column after reading (the schema check compares to this).
CANONICAL_TYPES: dict[str, str] = {
    C.TRANSACTION_ID: "string", C.TS: "timestamp", C.CARD_ID: "string", C.MERCHANT_ID: "string",
    C.MERCHANT_CATEGORY: "string", C.COUNTRY: "string", C.CARD_COUNTRY: "string", C.CHANNEL: "string",
    C.AMOUNT: "double", C.IS_FRAUD: "int", C.LABEL_AVAILABLE_AT: "timestamp",
    C.DECISION: "string", C.PROPENSITY: "double",
}
#: Canonical columns that hold numbers: a text source must parse (see Transactions.text_numeric).
NUMERIC_CANONICAL: tuple[str, ...] = (C.AMOUNT, C.IS_FRAUD)
#: Prefix of the source copies of text-typed numeric columns in Transactions.checked.
SOURCE_PREFIX = "_src_"


@dataclass(frozen=True)
class Transactions:
    """Raw transactions under canonical names; `df` is lazy and unfiltered."""

    df: DataFrame
    path: str  # absolute path (or glob) that was read
    files: tuple[str, ...]  # the data files, sorted; what the content hash covers
    columns: tuple[str, ...]  # canonical columns present (label_available_at included once derived)
    source_columns: tuple[str, ...]  # the columns the file has
    label_available_derived: bool  # True when label_available_at came from label_delay_days
    #: canonical numeric columns whose source is text: canonical name -> "source (type)"
    text_numeric: dict[str, str] = field(default_factory=dict)
    #: `df` plus, for each text_numeric column, its source text as `_src_<canonical>`: the raw
    #: pass counts values that do not parse on it (same job, same scan); None: same as df
    checked: DataFrame | None = None


def list_data_files(path: str | Path) -> tuple[tuple[str, ...], str]:
    """The data files behind `path` (a file, a directory or a glob), sorted, and their format.

    Hidden and bookkeeping files (``.crc``, ``_SUCCESS``) are skipped. CSV when every file
    ends in .csv or .csv.gz, Parquet otherwise. Raises RatchetError naming the path when
    nothing is there.
    """
    p = str(path)
    if any(ch in p for ch in "*?["):
        files = [f for f in globmod.glob(p, recursive=True) if os.path.isfile(f)]
    elif os.path.isdir(p):
        files = []
        for root, dirs, names in os.walk(p):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            files += [os.path.join(root, n) for n in names if not n.startswith((".", "_"))]
    elif os.path.isfile(p):
        files = [p]
    else:
        raise RatchetError(f"{p}: no such file or directory; check the dataset path")
    if not files:
        raise RatchetError(f"{p}: no data files found there; expected Parquet or CSV files")
    files = sorted(os.path.abspath(f) for f in files)
    fmt = "csv" if all(f.lower().endswith((".csv", ".csv.gz")) for f in files) else "parquet"
    return tuple(files), fmt


def content_hash(files: tuple[str, ...] | list[str]) -> str:
    """sha256 over the bytes of `files`, in the given (sorted) order."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def data_snapshot(tx: Transactions, rows: int) -> dict[str, object]:
    """What identifies the data a model was trained on: path, raw row count, content hash."""
    return {"path": tx.path, "rows": int(rows), "content_hash": content_hash(tx.files)}


def _family(t: object) -> str:
    """A Parquet column type up to width and unit (int32 and int64 read alike in Spark)."""
    import pyarrow.types as pt

    for name, test in (("integer", pt.is_integer), ("floating", pt.is_floating), ("timestamp", pt.is_timestamp),
                       ("string", lambda x: pt.is_string(x) or pt.is_large_string(x)), ("decimal", pt.is_decimal)):
        if test(t):
            return name
    return str(t)


def parquet_schemas(files: tuple[str, ...] | list[str], path: str | Path) -> list[str]:
    """The column names of a Parquet dataset, after checking that every file agrees on them.

    Reads each file's footer only (no data). Raises RatchetError naming the column, its
    types and a file with each type when the files disagree on a column's type (Spark
    would fail mid-job with a stack trace); a column missing from some files is allowed
    (Spark reads it as null there, and the null-rate check counts it).
    """
    import pyarrow.parquet as pq

    seen: dict[str, dict[str, str]] = {}  # column -> type -> first file with it
    names: list[str] = []
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # ArrowInvalid, OSError, ...
            raise RatchetError(f"{f}: cannot read the data as parquet (its footer: {str(exc).splitlines()[0][:300]}); "
                               "remove or re-export that file") from None
        for field_ in schema:
            kinds = seen.setdefault(field_.name, {})
            if field_.name not in names:
                names.append(field_.name)
            kinds.setdefault(_family(field_.type), f)
    for col, kinds in seen.items():
        if len(kinds) > 1:
            which = "; ".join(f"{t} in {os.path.basename(f)}" for t, f in kinds.items())
            raise RatchetError(
                f"{path}: the Parquet files disagree on the type of column '{col}' ({which}; "
                f"{len(files)} files in all): re-export them with one type for '{col}', "
                "or point the dataset path at the files that agree")
    return names


def read_raw(spark: SparkSession, path: str | Path) -> tuple[DataFrame, tuple[str, ...], str]:
    """Read the raw file(s) as they are; returns (frame, files, absolute path)."""
    files, fmt = list_data_files(path)
    target = str(path)
    abs_path = target if any(ch in target for ch in "*?[") else os.path.abspath(target)
    if fmt == "parquet":
        parquet_schemas(files, abs_path)
    try:
        if fmt == "csv":
            # Everything as strings: casting is ours, so a bad value becomes a null the
            # null-rate check reports instead of a parse error deep inside Spark.
            df = spark.read.option("header", True).option("inferSchema", False).csv(list(files))
        else:
            df = spark.read.parquet(*files)
    except Exception as exc:  # Spark raises AnalysisException, Py4JJavaError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RatchetError(f"{abs_path}: cannot read the data as {fmt} ({first[:300]})") from None
    return df, files, abs_path


def _find(columns: list[str], name: str) -> str | None:
    """The file's column called `name` (exact match first, then case-insensitive)."""
    if name in columns:
        return name
    lowered = [c for c in columns if c.lower() == name.lower()]
    return lowered[0] if len(lowered) == 1 else None


def label_source(spec: DataSpec) -> str:
    """The source column of the label: the mapping of is_fraud, else `label:` when it is not canonical."""
    if C.IS_FRAUD in spec.dataset.columns:
        return spec.dataset.columns[C.IS_FRAUD]
    return spec.label if spec.label not in C.CANONICAL else C.IS_FRAUD


def _timestamp(col: Column, dtype: T.DataType, fmt: str | None) -> Column:
    """A column of any reasonable time type as a Spark timestamp (UTC)."""
    if isinstance(dtype, (T.TimestampType,)):
        return col
    if isinstance(dtype, (T.TimestampNTZType, T.DateType)):
        return col.cast("timestamp")
    if isinstance(dtype, T.StringType):
        return F.try_to_timestamp(col, F.lit(fmt)) if fmt else col.try_cast("timestamp")
    if isinstance(dtype, T.NumericType):
        # Epoch numbers: the unit follows from the magnitude (s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns),
        # so nanosecond Parquet timestamps read as longs and millisecond exports both work.
        x = col.cast("double")
        a = F.abs(x)
        micros = (F.when(a >= 1e17, x / 1e3).when(a >= 1e14, x).when(a >= 1e11, x * 1e3).otherwise(x * 1e6))
        return F.timestamp_micros(micros.try_cast("long"))  # +-inf/NaN/overflow: null, counted by the null check
    raise RatchetError(f"cannot read a column of type {dtype.simpleString()} as a timestamp")


def _label(col: Column, dtype: T.DataType) -> Column:
    if isinstance(dtype, T.StringType):
        s = F.lower(F.trim(col))
        return (F.when(s.isin("1", "true", "t", "yes", "y"), 1).when(s.isin("0", "false", "f", "no", "n"), 0)
                .otherwise(s.try_cast("int")))
    if isinstance(dtype, T.BooleanType):
        return col.cast("int")
    return col.try_cast("int")


def resolve_columns(columns: list[str], spec: DataSpec,
                    source_label: str = "the file") -> tuple[dict[str, str], bool]:
    """Which source column serves each canonical one, and whether label_available_at must be
    derived; raises MissingColumnError naming what is missing and how to map it. Pure: used
    on Spark frames and, before anything starts, on a file's schema."""
    ds = spec.dataset
    have = ", ".join(columns)
    sources: dict[str, str] = {}
    for canon in C.CANONICAL:
        wanted = label_source(spec) if canon == C.IS_FRAUD else ds.source(canon)
        found = _find(columns, wanted)
        if found is not None:
            sources[canon] = found
        elif canon in C.REQUIRED:
            raise MissingColumnError(
                f"{source_label}: required column '{canon}' not found: looked for '{wanted}'; "
                f"the data has: {have}. Map it under dataset.columns ({canon}: YOUR_COLUMN)")

    present = set(sources)
    for feature in spec.features:
        lacking = [c for c in (feature_needs(feature) or ()) if c not in present]
        if lacking:
            raise MissingColumnError(
                f"feature '{feature}' needs columns {', '.join(lacking)}, which the dataset lacks: "
                f"map them under dataset.columns or remove the feature from features: (the data has: {have})")
    for flt in spec.filters:
        if flt.column not in present:
            raise MissingColumnError(
                f"filter on '{flt.column}' needs that column, which the dataset lacks "
                f"(looked for '{ds.source(flt.column)}'; the data has: {have}): map it or remove the filter")

    derived = C.LABEL_AVAILABLE_AT not in present
    if derived and ds.label_delay_days is None:
        raise MissingColumnError(
            f"{source_label}: no label_available_at column (looked for '{ds.source(C.LABEL_AVAILABLE_AT)}') "
            "and no dataset.label_delay_days in the spec, so ratchet cannot tell when each label became final. "
            "Add `label_delay_days: N` under dataset: (labels final N days after the transaction), "
            "or map label_available_at under dataset.columns")

    return sources, derived


def canonicalize(raw: DataFrame, spec: DataSpec, source_label: str = "the file",
                 ) -> tuple[DataFrame, tuple[str, ...], bool, DataFrame, dict[str, str]]:
    """Rename and cast `raw` to canonical columns; raise MissingColumnError for what is missing.

    Returns (frame with only canonical columns, canonical columns present, derived label
    time, the same frame plus the source text of text-typed numeric columns as
    `_src_<canonical>`, those columns as canonical -> "'source' (type)").
    """
    sources, derived = resolve_columns(list(raw.columns), spec, source_label)
    present = set(sources)
    ds = spec.dataset
    dtypes = {f.name: f.dataType for f in raw.schema.fields}
    out: list[Column] = []
    text_numeric: dict[str, str] = {}
    for canon, src in sources.items():
        col, dtype = F.col(f"`{src}`"), dtypes[src]
        if canon in NUMERIC_CANONICAL and isinstance(dtype, T.StringType):
            # kept beside the canonical value so the raw pass can count (and show) what does not parse
            text_numeric[canon] = f"'{src}' ({dtype.simpleString()})"
            out.append(col.alias(SOURCE_PREFIX + canon))
        if canon in (C.TS, C.LABEL_AVAILABLE_AT):
            try:
                expr = _timestamp(col, dtype, ds.timestamp_format)
            except RatchetError as exc:
                raise RatchetError(f"{source_label}: column '{src}' ({canon}): {exc}") from None
        elif canon in (C.AMOUNT, C.PROPENSITY):
            expr = col.try_cast("double")
        elif canon == C.IS_FRAUD:
            expr = _label(col, dtype)
        else:
            # Float ids (pandas turns int columns with gaps into floats) print without ".0".
            expr = col.try_cast("long").cast("string") if isinstance(dtype, T.FractionalType) else col.cast("string")
        out.append(expr.alias(canon))
    df = raw.select(*out)
    if derived:
        delay_us = int(round(float(ds.label_delay_days) * 86400 * 1_000_000))  # type: ignore[arg-type]
        df = df.withColumn(C.LABEL_AVAILABLE_AT, F.timestamp_micros(F.unix_micros(F.col(C.TS)) + F.lit(delay_us)))
        present.add(C.LABEL_AVAILABLE_AT)
    ordered = tuple(c for c in C.CANONICAL if c in present)
    checked = df.select(*ordered, *[SOURCE_PREFIX + c for c in text_numeric])
    return checked.select(*ordered), ordered, derived, checked, text_numeric


def read_transactions(spark: SparkSession, path: str | Path, spec: DataSpec) -> Transactions:
    """Read `path` and map it to canonical columns, typed; raises RatchetError/MissingColumnError.

        tx = read_transactions(get_spark(), "data/tx.parquet", load_spec("specs/fraud.yaml"))
    """
    raw, files, abs_path = read_raw(spark, path)
    df, present, derived, checked, text_numeric = canonicalize(raw, spec, source_label=abs_path)
    return Transactions(df=df, path=abs_path, files=files, columns=present, source_columns=tuple(raw.columns),
                        label_available_derived=derived, text_numeric=text_numeric,
                        checked=checked if text_numeric else None)


def filter_condition(filters: tuple[Filter, ...] | list[Filter]) -> Column:
    """One boolean column for all filters (rows where a filter is null are dropped)."""
    cond: Column = F.lit(True)
    for f in filters:
        col = F.col(f.column)
        if f.op == "in":
            c = col.isin(list(f.value))
        elif f.op == "not_in":
            c = ~col.isin(list(f.value))
        else:
            value = F.lit(f.value)
            c = {"==": col == value, "!=": col != value, ">": col > value, ">=": col >= value,
                 "<": col < value, "<=": col <= value}[f.op]
        cond = cond & F.coalesce(c, F.lit(False))
    return cond


def apply_filters(df: DataFrame, filters: tuple[Filter, ...] | list[Filter]) -> DataFrame:
    """Rows that pass every spec filter (canonical column names)."""
    return df.where(filter_condition(filters)) if filters else df


def preflight(path: str | Path, spec: DataSpec) -> int | None:
    """Checks that need no Spark, run before a pipeline starts: the files exist and are
    readable, the columns map onto the spec, and the data is not empty. Returns the row
    count when the file metadata tells it (Parquet), else None."""
    files, fmt = list_data_files(path)
    rows: int | None = None
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            columns = parquet_schemas(files, path)  # every file's footer: types must agree
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        else:
            import csv
            import gzip

            opener = gzip.open if files[0].endswith(".gz") else open
            with opener(files[0], "rt", newline="") as fh:
                columns = next(csv.reader(fh), [])
    except RatchetError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise RatchetError(f"{path}: cannot read the data as {fmt} ({str(exc).splitlines()[0][:300]})") from None
    sources, _ = resolve_columns(columns, spec, str(path))
    if rows == 0:
        raise DataCheckError("non_empty", 0, "at least 1 row", "the dataset has no rows; check the export")
    _preflight_numeric_text(files, fmt, sources, spec)
    return rows


#: Values of a text-typed numeric column that preflight reads (the first ones of the first file).
PREFLIGHT_SAMPLE = 1000
_LABEL_WORDS = frozenset({"1", "true", "t", "yes", "y", "0", "false", "f", "no", "n"})


def _parses(value: str, canonical: str) -> bool:
    """Whether Spark's reading of the column (canonicalize) gives a value for this text."""
    v = value.strip()
    if canonical == C.IS_FRAUD and v.lower() in _LABEL_WORDS:
        return True
    if "_" in v:  # Python's float() accepts 1_000; Spark does not
        return False
    try:
        x = float(v)
    except ValueError:
        return False
    return canonical != C.IS_FRAUD or x == int(x)


def _preflight_numeric_text(files: tuple[str, ...], fmt: str, sources: dict[str, str], spec: DataSpec) -> None:
    """Refuse, before Spark starts, a numeric column that arrives as text whose first values
    are not numbers (amounts as '1.234,56 EUR'): the first PREFLIGHT_SAMPLE values of the first
    file (one column of one Parquet row group, or the first CSV lines). The raw pass counts
    every row (numeric[raw.COL]); this only says it sooner."""
    from ratchet.data.checks import check_numeric_text, run_checks

    for canon in NUMERIC_CANONICAL:
        src = sources.get(canon)
        if src is None:
            continue
        if fmt == "parquet":
            import pyarrow.parquet as pq
            import pyarrow.types as pt

            pf = pq.ParquetFile(files[0])
            kind = pf.schema_arrow.field(src).type
            if not (pt.is_string(kind) or pt.is_large_string(kind)) or pf.metadata.num_row_groups == 0:
                continue
            sample = pf.read_row_group(0, columns=[src]).column(0).to_pylist()[:PREFLIGHT_SAMPLE]
            type_name = "string"
        else:
            import csv
            import gzip
            import itertools

            opener = gzip.open if files[0].endswith(".gz") else open
            with opener(files[0], "rt", newline="") as fh:
                sample = [r.get(src) for r in itertools.islice(csv.DictReader(fh), PREFLIGHT_SAMPLE)]
            type_name = "string"
        values = [v for v in sample if v not in (None, "")]
        bad = [v for v in values if not _parses(str(v), canon)]
        source = f"'{src}' ({type_name}; the first {len(values)} values of {os.path.basename(files[0])})"
        run_checks([check_numeric_text(canon, source, len(bad), len(values), bad[0] if bad else None,
                                       spec.checks.max_null_rate)])
