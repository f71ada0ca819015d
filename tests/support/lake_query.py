"""Queries a downloaded copy of a chainlog lake export with DuckDB, as a
data lake user would: the Parquet objects and the gzip JSON Lines objects,
each through DuckDB's own reader with hive partitioning (dt=YYYY-MM-DD).

    python lake_query.py DIR

DIR holds lake/parquet/dt=*/…parquet and lake/jsonl/dt=*/…jsonl.gz. Prints
one JSON object: for each format, the rows and failures per day, the row
count, distinct seqs, lowest and highest seq, and the column types DuckDB
read. Used by tests/lake.rs.
"""
import json
import sys

import duckdb

PER_DAY = """
SELECT CAST(dt AS VARCHAR) AS day,
       count(*) AS rows,
       count(*) FILTER (WHERE outcome = 'failure') AS failures
FROM {source} GROUP BY day ORDER BY day
"""
TOTALS = "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM {source}"


def summarize(con, source):
    days = {day: {"rows": rows, "failures": failures}
            for day, rows, failures in con.execute(PER_DAY.format(source=source)).fetchall()}
    rows, distinct, lowest, highest = con.execute(TOTALS.format(source=source)).fetchone()
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    types = {name: kind for name, kind, *_ in described}
    return {"days": days, "rows": rows, "distinct_seqs": distinct,
            "min_seq": lowest, "max_seq": highest, "types": types}


def main():
    root = sys.argv[1]
    con = duckdb.connect()
    parquet = f"read_parquet('{root}/lake/parquet/*/*.parquet', hive_partitioning = true)"
    jsonl = (f"read_json('{root}/lake/jsonl/*/*.jsonl.gz', format = 'newline_delimited', "
             "hive_partitioning = true, compression = 'gzip')")
    print(json.dumps({"parquet": summarize(con, parquet), "jsonl": summarize(con, jsonl)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
