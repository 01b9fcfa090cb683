#!/usr/bin/env python3
"""Plots and tables of scripts/bench-all.sh.

    scripts/plot_bench.py RESULTS_DIR PLOT_DIR [BENCHMARKS.md]

Reads machine.txt, crypto.csv, records.csv, wrap.csv, lifecycle.csv and memory.json from
RESULTS_DIR (each optional), writes PNGs into PLOT_DIR, writes RESULTS_DIR/side-by-side.md
(one row per target: envault's figure, the peer's from the same run, the ratio, the
target), and, when BENCHMARKS.md is given, replaces the block between
`<!-- bench-all:begin -->` and `<!-- bench-all:end -->` with that table.
"""

import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def pick(rows, **match):
    return [r for r in rows if all(str(r.get(k)) == str(v) for k, v in match.items())]


def one(rows, **match):
    found = pick(rows, **match)
    return found[0] if found else None


def series(rows, x, y, **match):
    pts = sorted((num(r[x]), num(r[y])) for r in pick(rows, **match) if num(r[y]) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def fmt(v, unit=""):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}{unit}"
    return f"{v:.2f}{unit}"


def main():
    results, plots = sys.argv[1], sys.argv[2]
    benchmarks = sys.argv[3] if len(sys.argv) > 3 else None
    os.makedirs(plots, exist_ok=True)
    machine = {}
    if os.path.exists(f"{results}/machine.txt"):
        for line in open(f"{results}/machine.txt"):
            k, _, v = line.strip().partition("=")
            machine[k] = v
    crypto = read_csv(f"{results}/crypto.csv")
    records = read_csv(f"{results}/records.csv")
    wrap = read_csv(f"{results}/wrap.csv")
    lifecycle = read_csv(f"{results}/lifecycle.csv")
    alloc = []
    if os.path.exists(f"{results}/alloc.json"):
        alloc = json.load(open(f"{results}/alloc.json"))
    memory = None
    if os.path.exists(f"{results}/memory.json"):
        memory = json.load(open(f"{results}/memory.json"))
    subtitle = f"{machine.get('nproc', '?')} vCPU {machine.get('cpu', '')}, {machine.get('date', '')}"
    written = []

    # Throughput vs value size: the primitive, and records over the socket at 16 clients.
    if crypto or records:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        ax = axes[0]
        for col, label in [
            ("ours_mb_s", "envault Cipher::seal_in_place"),
            ("openssl_aead_mb_s", "openssl -aead"),
            ("openssl_stream_mb_s", "openssl stream"),
        ]:
            xs, ys = series(crypto, "size", col)
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        ax.set(xscale="log", xlabel="message size (bytes)", ylabel="MB/s",
               title="AES-256-GCM seal, in process")
        ax.legend()
        ax.grid(alpha=0.3)
        ax = axes[1]
        for system, mode, op, label in [
            ("envault", "durable", "put", "envault PUT (durable)"),
            ("redis", "always", "set", "redis SET appendfsync always"),
            ("redis", "everysec", "set", "redis SET appendfsync everysec"),
            ("envault", "durable", "get", "envault GET"),
            ("redis", "always", "get", "redis GET"),
        ]:
            xs, ys = series(records, "value_size", "ops_per_s", system=system, mode=mode,
                            op=op, clients=16)
            if xs:
                ax.plot(xs, ys, marker="o", label=label,
                        linestyle="-" if system == "envault" else "--")
        ax.set(xscale="log", yscale="log", xlabel="value size (bytes)", ylabel="ops/s",
               title="Records over a Unix socket, 16 clients")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.suptitle(f"Throughput vs value size ({subtitle})", fontsize=10)
        fig.tight_layout()
        fig.savefig(f"{plots}/throughput_vs_value_size.png", dpi=110)
        plt.close(fig)
        written.append("throughput_vs_value_size.png")

    # Latency percentiles and throughput vs clients.
    panels = [
        ("PUT / SET, 1 KiB", records, [
            ("envault PUT", dict(system="envault", mode="durable", op="put", value_size=1024)),
            ("redis SET always", dict(system="redis", mode="always", op="set", value_size=1024)),
            ("redis SET everysec", dict(system="redis", mode="everysec", op="set", value_size=1024)),
        ]),
        ("GET, 1 KiB", records, [
            ("envault GET", dict(system="envault", mode="durable", op="get", value_size=1024)),
            ("redis GET", dict(system="redis", mode="always", op="get", value_size=1024)),
        ]),
        ("wrap / transit encrypt, 32 B", wrap, [
            ("envault wrap", dict(system="envault", op="wrap")),
            ("OpenBao encrypt", dict(system="openbao", op="encrypt")),
        ]),
        ("unwrap / transit decrypt, 32 B", wrap, [
            ("envault unwrap", dict(system="envault", op="unwrap")),
            ("OpenBao decrypt", dict(system="openbao", op="decrypt")),
        ]),
    ]
    if records or wrap:
        for name, ylabel, columns in [
            ("latency_vs_clients.png", "latency (ms, log)", [("p50_ms", "p50", "-"), ("p99_ms", "p99", "--"),
                                                            ("p999_ms", "p99.9", ":")]),
            ("throughput_vs_clients.png", "ops/s", [("ops_per_s", "", "-")]),
        ]:
            fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
            for ax, (title, rows, lines) in zip(axes, panels):
                for i, (label, match) in enumerate(lines):
                    color = f"C{i}"
                    for col, suffix, style in columns:
                        xs, ys = series(rows, "clients", col, **match)
                        if xs:
                            ax.plot(xs, ys, marker="o", linestyle=style, color=color,
                                    label=f"{label} {suffix}".strip())
                ax.set(xscale="log", xlabel="clients", ylabel=ylabel, title=title)
                if "latency" in name:
                    ax.set_yscale("log")
                ax.set_xticks([1, 16, 64], labels=["1", "16", "64"])
                ax.legend(fontsize=7)
                ax.grid(alpha=0.3)
            fig.suptitle(f"{ylabel.split(' ')[0].capitalize()} vs clients ({subtitle}); "
                         "redis-benchmark reports no p99.9", fontsize=10)
            fig.tight_layout()
            fig.savefig(f"{plots}/{name}", dpi=110)
            plt.close(fig)
            written.append(name)

    # Rotation and shred vs record count.
    if lifecycle:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for col, label in [("rotate_ms", "rotate (median)"), ("shred_ms", "shred")]:
            xs, ys = series(lifecycle, "records", col)
            ax.plot(xs, ys, marker="o", label=label)
        dbs = lifecycle[0].get("databases", "?")
        ax.set(xscale="log", xlabel="records (all databases)", ylabel="ms",
               title=f"Key protecting {dbs} databases ({subtitle})")
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(f"{plots}/lifecycle_vs_records.png", dpi=110)
        plt.close(fig)
        written.append("lifecycle_vs_records.png")

    table = render_table(machine, crypto, records, wrap, lifecycle, memory, plots, written)
    if alloc:
        table += ("\nAllocations per operation at 64 B (`cargo bench --bench alloc`, counting "
                  "global allocator; single thread, no pinning):\n\n"
                  "| operation | allocs/op | ns/op | allowed |\n|---|---|---|---|\n")
        table += "".join(f"| {a['op']} | {a['allocs_per_op']:.2f} | {a['ns_per_op']:.0f} | "
                         f"{a['allowed']:.0f} |\n" for a in alloc)
    with open(f"{results}/side-by-side.md", "w") as f:
        f.write(table)
    print(table)
    if benchmarks:
        text = open(benchmarks).read()
        begin, end = "<!-- bench-all:begin -->", "<!-- bench-all:end -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            with open(benchmarks, "w") as f:
                f.write(head + begin + "\n" + table + end + tail)
            print(f"updated {benchmarks}")
        else:
            print(f"{benchmarks} has no {begin} block; table left in {results}/side-by-side.md")


def render_table(machine, crypto, records, wrap, lifecycle, memory, plots, written):
    out = []
    out.append(f"Generated by `scripts/bench-all.sh` on {machine.get('date', '?')}: "
               f"`nproc` = {machine.get('nproc', '?')}, CPU {machine.get('cpu', '?')}, "
               f"{machine.get('memory', '?')} RAM; {machine.get('openssl', '')}, "
               f"redis {machine.get('redis', '?')}, OpenBao {machine.get('openbao', '?')}, "
               f"envault {machine.get('envault', '?')}; {machine.get('seconds_per_run', '?')} s "
               "per point after 1 s warm-up. Load = `/proc/loadavg` 1-min at the start of the "
               "envault run of that row.\n")
    out.append("| row | envault | peer (same run) | ratio | target | met | load |")
    out.append("|---|---|---|---|---|---|---|")

    def row(name, ours, peer, ratio, target, met, load=""):
        out.append(f"| {name} | {ours} | {peer} | {ratio} | {target} | {met} | {load} |")

    def verdict(ratio, target, higher=True):
        if ratio is None:
            return "–"
        return "**yes**" if (ratio >= target if higher else ratio < target) else "**no**"

    def load1(r):
        return (r.get("loadavg") or "").split(" ")[0] if r else ""

    for size in ["64", "4096", "65536"]:
        r = one(crypto, size=size)
        if not r:
            continue
        ours, peer = num(r["ours_mb_s"]), num(r["openssl_aead_mb_s"])
        ratio = ours / peer if ours and peer else None
        if size == "64":
            ns = 64 * 1000 / ours if ours else None
            row("seal 64 B (ns/op)", f"{fmt(ns)} ns ({fmt(ours)} MB/s)",
                f"{fmt(64 * 1000 / peer if peer else None)} ns ({fmt(peer)} MB/s)",
                fmt(ratio) + "×", "report", "–", load1(r))
        else:
            row(f"seal {int(size) // 1024} KiB (MB/s)", fmt(ours), f"openssl -aead {fmt(peer)}",
                fmt(ratio) + "×", "≥ 0.9×", verdict(ratio, 0.9), load1(r))
    for clients in ["1", "16", "64"]:
        e = one(records, system="envault", mode="durable", op="put", clients=clients,
                value_size=1024)
        for mode in ["always", "everysec"]:
            p = one(records, system="redis", mode=mode, op="set", clients=clients, value_size=1024)
            if not (e and p):
                continue
            ratio = num(e["ops_per_s"]) / num(p["ops_per_s"])
            gated = mode == "always" and clients != "1"
            row(f"durable PUT vs redis SET {mode}, {clients} clients (ops/s; p50/p99 ms)",
                f"{fmt(num(e['ops_per_s']))}; {e['p50_ms']}/{e['p99_ms']}",
                f"{fmt(num(p['ops_per_s']))}; {p['p50_ms']}/{p['p99_ms']}", f"{ratio:.2f}×",
                "≥ 1.0×" if gated else "info", verdict(ratio, 1.0) if gated else "–", load1(e))
    for clients in ["1", "16", "64"]:
        e = one(records, system="envault", mode="durable", op="get", clients=clients,
                value_size=1024)
        p = one(records, system="redis", mode="always", op="get", clients=clients,
                value_size=1024)
        if not (e and p):
            continue
        ratio = num(e["ops_per_s"]) / num(p["ops_per_s"])
        gated = clients != "1"
        row(f"GET vs redis GET, {clients} clients (ops/s; p50/p99 ms)",
            f"{fmt(num(e['ops_per_s']))}; {e['p50_ms']}/{e['p99_ms']}",
            f"{fmt(num(p['ops_per_s']))}; {p['p50_ms']}/{p['p99_ms']}", f"{ratio:.2f}×",
            "≥ 0.8×" if gated else "info", verdict(ratio, 0.8) if gated else "–", load1(e))
    # The batch route (records/s, latency per batch request) against the same redis server,
    # unpipelined (the target's peer figure) and pipelining the same number of commands.
    batch_modes = sorted({r["mode"] for r in records
                          if r["system"] == "envault" and r["mode"].startswith("batch")})
    for mode in batch_modes:
        n = mode[len("batch"):]
        for ours_op, peer_op, target in [("put", "set", 1.0), ("get", "get", 0.8)]:
            for clients in ["16", "64"]:
                e = one(records, system="envault", mode=mode, op=ours_op, clients=clients,
                        value_size=1024)
                for peer_mode, peer_name in [("always", "unpipelined"),
                                             (f"always-P{n}", f"pipelined -P {n}")]:
                    p = one(records, system="redis", mode=peer_mode, op=peer_op,
                            clients=clients, value_size=1024)
                    if not (e and p):
                        continue
                    ratio = num(e["ops_per_s"]) / num(p["ops_per_s"])
                    row(f"{ours_op.upper()} batches of {n} vs redis {peer_op.upper()} "
                        f"{peer_name}, {clients} clients (records/s; p50/p99 ms per request)",
                        f"{fmt(num(e['ops_per_s']))}; {e['p50_ms']}/{e['p99_ms']}",
                        f"{fmt(num(p['ops_per_s']))}; {p['p50_ms']}/{p['p99_ms']}",
                        f"{ratio:.2f}×", f"info (target row: ≥ {target}× single requests)",
                        "–", load1(e))
    for ours_op, peer_op in [("wrap", "encrypt"), ("unwrap", "decrypt")]:
        for clients in ["1", "16", "64"]:
            e = one(wrap, system="envault", op=ours_op, clients=clients)
            p = one(wrap, system="openbao", op=peer_op, clients=clients)
            if not (e and p):
                continue
            ratio = num(e["ops_per_s"]) / num(p["ops_per_s"])
            row(f"{ours_op} vs OpenBao transit {peer_op}, 32 B, {clients} clients "
                "(ops/s; p50/p99 ms)",
                f"{fmt(num(e['ops_per_s']))}; {e['p50_ms']}/{e['p99_ms']}",
                f"{fmt(num(p['ops_per_s']))}; {p['p50_ms']}/{p['p99_ms']}", f"{ratio:.2f}×",
                "≥ 5×", verdict(ratio, 5.0), load1(e))
    if len(lifecycle) >= 2:
        small, large = lifecycle[0], lifecycle[-1]
        for col, name in [("rotate_ms", "rotation"), ("shred_ms", "shred")]:
            a, b = num(small[col]), num(large[col])
            ratio = b / a if a else None
            row(f"{name}, key of {large['databases']} databases: {int(num(large['records'])):,} vs "
                f"{int(num(small['records'])):,} records (ms)", fmt(b), f"envault itself: {fmt(a)}",
                fmt(ratio) + "×", "< 1.2×", verdict(ratio, 1.2, higher=False), load1(large))
    if memory:
        row(f"daemon VmRSS, {memory['records']:,} records of 1 KiB in {memory['databases']:,} "
            "databases (MiB)",
            f"{memory['rss_after_fill_and_gets_mib']:.0f} (idle 5 s later "
            f"{memory['rss_idle_5s_mib']:.0f}; fresh {memory['rss_fresh_mib']:.0f})",
            "–", "–", "report", "–", (memory.get("loadavg") or "").split(" ")[0])
    out.append("")
    if written:
        out.append("Plots: " + ", ".join(
            f"[{w}]({os.path.relpath(plots, '.')}/{w})" for w in written) + ".")
        out.append("")
        for w in written:
            out.append(f"![{w}]({os.path.relpath(plots, '.')}/{w})")
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
