#!/usr/bin/env python3
"""velostream against DuckDB, DataFusion and Polars on the same generated files.

`bench/peers/run` makes the virtual environment and runs this; docs/benchmarks.md
("Against DuckDB, DataFusion and Polars") describes the workloads and what is measured.

Every measurement is a process of its own, file in, file out: velostream is `velo-sql-batch
SCRIPT`, each peer is this file run as `peers.py peer ENGINE WORKLOAD ...`, so that a peer's
thread setting (Polars reads POLARS_MAX_THREADS when it is imported) and its peak RSS are its
own. The parent reaps each child with os.wait4 and checks every result against the others.
"""

import argparse
import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ["duckdb", "datafusion", "polars"]

# The generated files: velo-bench's trades (CSV with a header) and 1BRC's measurements.
INPUTS = {
    "trades": {
        "columns": [("symbol", "VARCHAR"), ("price", "DOUBLE"), ("quantity", "BIGINT"), ("ts", "BIGINT")],
        "header": True,
        "delimiter": ",",
        "generate": ["--keys", "1000"],
    },
    "measurements": {
        "columns": [("station", "VARCHAR"), ("temperature", "DOUBLE")],
        "header": False,
        "delimiter": ";",
        "generate": ["--stream", "measurements"],
    },
}

# Each workload: its input, the key columns of its result (None: not an aggregate, only the
# row count is compared), the SQL of DuckDB and DataFusion ({div}: integer division), and
# velostream's query and extra WITH keys.
WORKLOADS = {
    "group_by_final": {
        "input": "trades",
        "key": ["symbol"],
        "sql": "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty, AVG(price) AS avg_price "
        "FROM trades GROUP BY symbol",
        "velo": "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty, AVG(price) AS avg_price "
        "FROM trades GROUP BY symbol EMIT FINAL",
        "with": {},
    },
    "tumbling_1m": {
        "input": "trades",
        "key": ["symbol", "window_start"],
        "sql": "SELECT symbol, ts {div} 60000 * 60000 AS window_start, COUNT(*) AS n, "
        "SUM(quantity) AS qty, AVG(price) AS avg_price FROM trades GROUP BY symbol, ts {div} 60000",
        "velo": "SELECT symbol, _window_start AS window_start, COUNT(*) AS n, SUM(quantity) AS qty, "
        "AVG(price) AS avg_price FROM trades GROUP BY symbol "
        "WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) EMIT FINAL",
        "with": {"trades.event.time.field": "ts", "trades.watermark.max_out_of_orderness": "2s"},
    },
    "onebrc": {
        "input": "measurements",
        "key": ["station"],
        "sql": "SELECT station, MIN(temperature) AS min_temp, AVG(temperature) AS mean_temp, "
        "MAX(temperature) AS max_temp FROM measurements GROUP BY station",
        "velo": "SELECT station, MIN(temperature) AS min_temp, AVG(temperature) AS mean_temp, "
        "MAX(temperature) AS max_temp FROM measurements GROUP BY station EMIT FINAL",
        "with": {},
    },
    "filter_projection": {
        "input": "trades",
        "key": None,
        "sql": "SELECT symbol, price * quantity AS notional, ts FROM trades WHERE quantity > 200",
        "velo": "SELECT symbol, price * quantity AS notional, ts FROM trades WHERE quantity > 200",
        "with": {},
    },
}


def polars_query(workload, lf):
    """The Polars (lazy API) form of each workload."""
    import polars as pl

    trade_stats = [pl.len().alias("n"), pl.col("quantity").sum().alias("qty"), pl.col("price").mean().alias("avg_price")]
    if workload == "group_by_final":
        return lf.group_by("symbol").agg(trade_stats)
    if workload == "tumbling_1m":
        start = (pl.col("ts") // 60000 * 60000).alias("window_start")
        return lf.group_by(pl.col("symbol"), start).agg(trade_stats)
    if workload == "onebrc":
        t = pl.col("temperature")
        return lf.group_by("station").agg(t.min().alias("min_temp"), t.mean().alias("mean_temp"), t.max().alias("max_temp"))
    return lf.filter(pl.col("quantity") > 200).select("symbol", (pl.col("price") * pl.col("quantity")).alias("notional"), "ts")


def run_peer(engine, workload, path, output, threads):
    """In the child: runs one workload on one peer, file to CSV file; prints its timings."""
    w = WORKLOADS[workload]
    name = w["input"]
    spec = INPUTS[name]
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        columns = ", ".join(f"'{c}': '{t}'" for c, t in spec["columns"])
        source = (
            f"read_csv('{path}', header = {str(spec['header']).lower()}, "
            f"delim = '{spec['delimiter']}', columns = {{{columns}}}) AS {name}"
        )
        sql = w["sql"].format(div="//").replace(f"FROM {name}", f"FROM {source}")
        run = lambda: con.execute(f"COPY ({sql}) TO '{output}' (FORMAT csv, HEADER)")  # noqa: E731
    elif engine == "datafusion":
        import pyarrow as pa
        from datafusion import SessionConfig, SessionContext

        types = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "BIGINT": pa.int64()}
        schema = pa.schema([(c, types[t]) for c, t in spec["columns"]])
        ctx = SessionContext(SessionConfig().with_target_partitions(threads))
        ctx.register_csv(name, path, schema=schema, has_header=spec["header"], delimiter=spec["delimiter"])
        run = lambda: ctx.sql(w["sql"].format(div="/")).write_csv(output, with_header=True)  # noqa: E731
    else:
        import polars as pl

        types = {"VARCHAR": pl.String, "DOUBLE": pl.Float64, "BIGINT": pl.Int64}
        lf = pl.scan_csv(
            path,
            has_header=spec["header"],
            separator=spec["delimiter"],
            schema={c: types[t] for c, t in spec["columns"]},
        )
        run = lambda: polars_query(workload, lf).sink_csv(output)  # noqa: E731
    base_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # noqa: E731
    cpu0, t0 = cpu(), time.perf_counter()
    run()
    wall, cpu_s = time.perf_counter() - t0, cpu() - cpu0
    print(json.dumps({"wall_s": wall, "cpu_s": cpu_s, "base_rss_kb": base_rss_kb}))


def velo_script(workload, path, output, fmt):
    """velostream's script: the declared source, and the query as a CSAS to a file in `fmt` (csv, jsonl)."""
    w = WORKLOADS[workload]
    name = w["input"]
    spec = INPUTS[name]
    columns = ", ".join(f"{c} {t}" for c, t in spec["columns"])
    source = {
        f"{name}.type": "file_source",
        f"{name}.path": str(path),
        f"{name}.format": "csv",
        f"{name}.header": str(spec["header"]).lower(),
        f"{name}.delimiter": spec["delimiter"],
    }
    sink = {"out.type": "file_sink", "out.path": str(output), "out.format": fmt, **w["with"]}
    keys = lambda d: ", ".join(f"'{k}' = '{v}'" for k, v in d.items())  # noqa: E731
    return f"CREATE STREAM {name} ({columns}) WITH ({keys(source)});\nCREATE STREAM out AS {w['velo']}\nWITH ({keys(sink)});\n"


def measure(cmd, log, env=None):
    """Runs cmd to completion: (wall s, CPU s of the child, its peak RSS in KB, its stdout)."""
    # A child's peak RSS starts at its parent's at the fork, and this process holds results:
    # GNU time, forked small, reports the measured process's own.
    rss_file = f"{log}.rss"
    with open(log, "w+b") as err, open(f"{log}.out", "w+b") as out:
        t0 = time.perf_counter()
        child = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file, *cmd], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            sys.exit(f"{' '.join(map(str, cmd))} failed ({child.returncode}):\n{err.read().decode(errors='replace')}")
        with open(rss_file) as f:
            rss_kb = int(f.read().split()[-1])
        return wall, usage.ru_utime + usage.ru_stime, rss_kb, out.read().decode()


def count_lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def read_result(path, key, jsonl):
    """An aggregate's result as {key tuple: values}, or a plain result's row count."""
    if key is None:
        return count_lines(path) - (0 if jsonl else 1)
    with open(path, newline="") as f:
        rows = (json.loads(line) for line in f) if jsonl else csv.DictReader(f)
        result = {}
        for row in rows:
            k = tuple(str(row.pop(c)) for c in key)
            result[k] = {c: float(v) for c, v in row.items()}
    return result


def differences(a, b):
    """Where result b differs from a (row counts, keys or values beyond float tolerance)."""
    if isinstance(a, int):
        return [] if a == b else [f"{b} rows, not {a}"]
    if len(a) != len(b):
        return [f"{len(b)} rows, not {len(a)}"]
    out = []
    for k, row in a.items():
        other = b.get(k)
        if other is None:
            out.append(f"no row for {k}")
            continue
        for c, v in row.items():
            if c not in other or not math.isclose(v, other[c], rel_tol=1e-9, abs_tol=1e-9):
                out.append(f"{k} {c}: {other.get(c)} not {v}")
    return out[:5]


def generate(args, data):
    """Writes the input files once (kept in --data for the next run unless --clean)."""
    files = {}
    for name, spec in INPUTS.items():
        path = data / f"{name}.{args.rows}.s{args.seed}.csv"
        if not path.exists():
            print(f"generating {path}", file=sys.stderr)
            tmp = path.with_suffix(".tmp")
            cmd = [args.bench, "generate", "--rows", str(args.rows), "--seed", str(args.seed), "--format", "csv", *spec["generate"]]
            subprocess.run([*cmd, "--output", str(tmp)], check=True)
            tmp.rename(path)
        files[name] = path
    return files


def bench(args):
    data = Path(args.data)
    (data / "out").mkdir(parents=True, exist_ok=True)
    files = generate(args, data)
    velos = []
    for spec in args.velo or [str(ROOT / "target/release/velo-sql-batch")]:
        label, sep, path = spec.partition("=")
        velos.append((label, path) if sep else ("velostream", spec))
    if len(dict(velos)) < len(velos) or set(dict(velos)) & set(PEERS):
        sys.exit("give each --velo its own LABEL=PATH, none named like a peer")
    engines = [label for label, _ in velos] + PEERS
    env = {**os.environ, "POLARS_MAX_THREADS": str(args.threads)}
    runs, results = [], {}
    for workload in args.workloads:
        w = WORKLOADS[workload]
        path = files[w["input"]]
        input_rows = args.rows
        for attempt in range(1, args.repeat + 1):
            # The engines take turns, so that each meets the same moments of machine noise.
            for engine in engines:
                velo = dict(velos).get(engine)
                jsonl = bool(velo) and args.velo_format == "jsonl"
                output = data / "out" / f"{engine}.{workload}.{'jsonl' if jsonl else 'csv'}"
                output.unlink(missing_ok=True)
                log = data / "out" / f"{engine}.{workload}.log"
                if velo:
                    script = data / "out" / f"{engine}.{workload}.sql"
                    script.write_text(velo_script(workload, path, output, args.velo_format))
                    width = ["--partitions", str(args.velo_partitions)] if args.velo_partitions else []
                    cmd = [velo, str(script), *width, "--no-progress"]
                    wall, cpu_s, rss, _ = measure(cmd, log)
                    process_wall, base_rss = wall, None
                else:
                    cmd = [sys.executable, __file__, "peer", engine, workload, str(path), str(output), str(args.threads)]
                    process_wall, _, rss, out = measure(cmd, log, env)
                    inner = json.loads(out.strip().splitlines()[-1])
                    wall, cpu_s, base_rss = inner["wall_s"], inner["cpu_s"], inner["base_rss_kb"]
                result = read_result(output, w["key"], jsonl)
                output_rows = result if isinstance(result, int) else len(result)
                reference = results.setdefault(workload, (engine, result))
                wrong = differences(reference[1], result)
                if wrong:
                    sys.exit(f"{workload}: {engine}'s result differs from {reference[0]}'s: {'; '.join(wrong)}")
                output.unlink()
                run = {
                    "workload": workload,
                    "engine": engine,
                    "attempt": attempt,
                    "input_rows": input_rows,
                    "output_rows": output_rows,
                    "wall_s": wall,
                    "process_wall_s": process_wall,
                    "cpu_s": cpu_s,
                    "peak_rss_kb": rss,
                    "base_rss_kb": base_rss,
                }
                runs.append(run)
                print(f"{workload} {engine} run {attempt}: {wall:.3f}s, cpu {cpu_s:.2f}s, {output_rows} rows, {rss // 1024} MB", file=sys.stderr)
    best = {}
    for r in runs:
        k = (r["workload"], r["engine"])
        if k not in best or r["wall_s"] < best[k]["wall_s"]:
            best[k] = r
    print(report(args, engines, best))
    if args.json:
        doc = {"rows": args.rows, "seed": args.seed, "threads": args.threads, "repeat": args.repeat,
               "cores": os.cpu_count(), "engines": engines, "velo": dict(velos), "runs": runs}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    if args.clean:
        for path in files.values():
            path.unlink()


def rate(per_s):
    """A rate as 1.23M or 45.6K."""
    return f"{per_s / 1e6:.2f}M" if per_s >= 1e5 else f"{per_s / 1e3:.1f}K"


def report(args, engines, best):
    """Markdown tables of the best runs: wall, CPU per input record, peak RSS, output rows/s."""
    velo = engines[-len(PEERS) - 1]
    head = lambda extra: "| workload | output rows | " + " | ".join(engines) + extra  # noqa: E731
    line = lambda n: "|---|---:|" + "---:|" * n  # noqa: E731

    def table(title, cell, ratio=None, best_peer="fastest"):
        extra = f" | {velo} / {best_peer} peer |" if ratio else " |"
        rows = [title, "", head(extra), line(len(engines) + bool(ratio))]
        for workload in args.workloads:
            bs = [best[(workload, e)] for e in engines]
            cells = [cell(b) for b in bs]
            if ratio:
                fastest = min(ratio(best[(workload, p)]) for p in PEERS)
                cells.append(f"{ratio(best[(workload, velo)]) / fastest:.2f}")
            rows.append(f"| {workload} | {bs[0]['output_rows']:,} | " + " | ".join(cells) + " |")
        return "\n".join(rows)

    intro = (
        f"{args.rows:,} input rows, best of {args.repeat} (by wall time), {args.threads} threads per peer, "
        f"velostream at {f'{args.velo_partitions} partitions' if args.velo_partitions else 'its default width'}, "
        f"{os.cpu_count()} cores. velostream writes {'JSON lines' if args.velo_format == 'jsonl' else 'CSV'}, the peers CSV; "
        "every result is a file."
    )
    return "\n\n".join([
        intro,
        table("Wall time, seconds (input file to result file)", lambda b: f"{b['wall_s']:.3f}", lambda b: b["wall_s"]),
        table("CPU time per input record, ns (user + system, all threads)",
              lambda b: f"{b['cpu_s'] * 1e9 / b['input_rows']:.0f}", lambda b: b["cpu_s"], "cheapest"),
        table("Peak RSS, MB", lambda b: f"{b['peak_rss_kb'] / 1024:.0f}"),
        table("Output rows per second (of the best wall time)", lambda b: rate(b["output_rows"] / b["wall_s"])),
    ]) + "\n"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "peer":
        engine, workload, path, output, threads = sys.argv[2:7]
        run_peer(engine, workload, path, output, int(threads))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="input rows of each file")
    p.add_argument("--repeat", type=int, default=3, help="runs of each (workload, engine); the fastest is reported")
    p.add_argument("--velo", action="append", metavar="[LABEL=]PATH",
                   help="a velo-sql-batch binary (repeatable; default target/release/velo-sql-batch)")
    p.add_argument("--bench", default=str(ROOT / "target/release/velo-bench"), help="the velo-bench binary that generates the files")
    p.add_argument("--data", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "velo-peers"), help="where the files go")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of each peer")
    p.add_argument("--velo-partitions", type=int,
                   help="velostream's partitions (default: its own default, which decodes on one thread per core)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--velo-format", choices=["csv", "jsonl"], default="csv",
                   help="what velostream writes: CSV as the peers do (default), or JSON lines")
    p.add_argument("--workload", dest="workloads", action="append", choices=list(WORKLOADS), help="repeatable; default all")
    p.add_argument("--json", help="write every run to this file")
    p.add_argument("--clean", action="store_true", help="delete the input files at the end")
    args = p.parse_args()
    args.workloads = args.workloads or list(WORKLOADS)
    bench(args)


if __name__ == "__main__":
    main()
