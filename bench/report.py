#!/usr/bin/env python3
"""Merges the benchmark JSON files, prints the table, writes bench.json and the plot.

  python bench/report.py --dir bench/results [--readme bench/README.md] [--no-plot]

Reads DIR/kubernetes.json (bench/kubernetes.py) and, if present, DIR/process_backend.json
(bench/process_backend.py); writes DIR/bench.json (both, plus the table as Markdown),
DIR/table.md and DIR/latency_vs_runtimes.png (/list and /sessions/batch latency against the
number of runtimes). With --readme, replaces the text between the `<!-- results:begin -->` and
`<!-- results:end -->` markers of that file with the table. Every number comes from the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def ms(x: float) -> str:
    v = x * 1000
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def pcts(s: dict, keys=("p50", "p95", "p99")) -> str:
    return " / ".join(ms(s[k]) for k in keys) + " ms"


def machine_short(m: dict) -> str:
    return f"{m['cores']} cores, {m['mem_total_gib']} GiB"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def table(k8s: dict, proc: dict | None) -> str:
    r = k8s["results"]
    mk = machine_short(k8s["machine"])
    rows = []

    def row(what, service, limit, ratio, machine=mk):
        rows.append(f"| {what} | {service} | {limit} | {ratio} | {machine} |")

    s = r["start_latency"]
    seq, conc = s["sequential"], s["concurrent"]
    row(f"1. `/start` response, {seq['n']} sequential (p50 / p95 / p99)", pcts(seq["service_start_s"]),
        f"five objects created directly: {pcts(seq['direct_create_s'])}",
        f"{seq['ratio_p50']:.2f} (p99 {seq['ratio_p99']:.2f})")
    row(f"1. `/start` response, {conc['n']} at concurrency {conc['concurrency']} (p50 / p95 / p99)",
        f"{pcts(conc['service_start_s'])}; {conc['service_starts_per_s']}/s",
        f"{pcts(conc['direct_create_s'])}; {conc['direct_creates_per_s']}/s",
        f"{conc['ratio_p50']:.2f} (p99 {conc['ratio_p99']:.2f})")
    cpu = s.get("driver_cpu_ms_per_op")
    if cpu:
        row("1. driver CPU per operation (Python, same lean client on both sides)",
            f"{cpu['service_start']:.2f} ms per `/start`", f"{cpu['direct_create']:.2f} ms per five creates", "-")
    w = r["start_to_running"]
    row(f"2. `/start` -> `running` (kwok pod ready), {w['runs']} runs (p50 / p95 / p99)",
        pcts(w["service_start_to_running_s"]), f"bare pod create -> Ready: {pcts(w['bare_pod_create_to_ready_s'])}",
        f"{w['ratio_p50']:.2f}")
    for rd in r["reads"]:
        n = rd["runtimes"]
        row(f"3. `/list?status=all`, {n} runtimes (p50 / p99; API requests per read)",
            f"{pcts(rd['list']['latency_s'], ('p50', 'p99'))}; {rd['list']['apiserver_requests_per_read']:g} per read",
            "0 API requests per read", "-")
        row(f"3. `/sessions/batch` ({rd['batch_ids']} ids), {n} runtimes (p50 / p99; API requests per read)",
            f"{pcts(rd['batch']['latency_s'], ('p50', 'p99'))}; {rd['batch']['apiserver_requests_per_read']:g} per read",
            "0 API requests per read", "-")
        if "get" in rd:
            row(f"3. `/runtime/{{id}}`, {n} runtimes (p50 / p99); `/metrics` scrape (p50)",
                f"{pcts(rd['get']['latency_s'], ('p50', 'p99'))}; `/metrics` {pcts(rd['metrics_scrape_s'], ('p50',))}",
                "-", "-")
        if rd["runtimes"] == max(x["runtimes"] for x in r["reads"]):
            row(f"3. `/list?status=all` bytes at {n} runtimes", f"{rd['list']['bytes_last_response']:,} B", "-", "-")
    mem = r["memory_kib"]
    order = sorted((k for k in mem if k.isdigit()), key=int)
    row("4. service VmRSS by number of runtimes", ", ".join(f"{k}: {mib(mem[k])}" for k in order)
        + "".join(f"; {k.replace('_', ' ')}: {mib(v)}" for k, v in mem.items() if not k.isdigit()), "-", "-")
    v1 = r.get("v1_pattern")
    if v1:
        row(f"7. V1 pattern at {v1['runtimes_before']} runtimes: `/list` then `/start`, {v1['runs']} times (p50 / p99)",
            f"`/list` {pcts(v1['list_s'], ('p50', 'p99'))}, `/start` {pcts(v1['start_s'], ('p50', 'p99'))}; "
            f"both {pcts(v1['list_then_start_s'], ('p50', 'p99'))}", "-", "-")
    idle = r.get("idle_traffic_0")
    if idle:
        per_min = lambda d, secs: sum(d.values()) * 60 / secs
        base = per_min(idle["without_service"], idle["without_seconds"])
        withs = per_min(idle["with_service"], idle["with_seconds"])
        row("8. idle API-server requests per minute at 0 runtimes (all clients: kwok, scheduler, ...)",
            f"{withs:.0f} with the service, {base:.0f} without: service ~{withs - base:.0f}/min", "-", "-")
    top = r.get("top")
    if top:
        t = top["start_sequential_s"]
        first = r["start_latency"]["sequential"]["service_start_s"]
        direct = top.get("direct_create_s")
        row(f"9. `/start` at {top['runtimes']} runtimes, {t['n']} sequential (p50 / p99)",
            f"{pcts(t, ('p50', 'p99'))} (at {r['reads'][0]['runtimes']}: {pcts(first, ('p50', 'p99'))})",
            f"five objects created directly, interleaved: {pcts(direct, ('p50', 'p99'))}" if direct else "-",
            f"{t['p50'] / direct['p50']:.2f}" if direct else f"{t['p50'] / first['p50']:.2f}")
        row(f"9. restart at {top['runtimes']} runtimes: ready after re-list; VmRSS; one maintenance round",
            f"{top['restart_seconds_to_ready']:.1f} s; {mib(top['memory_kib_after_restart'])}; "
            f"round {top['maintenance_round_seconds'] * 1000:.0f} ms, {top['maintenance_round_kube_requests']} API requests",
            "-", "-")
        if "idle_traffic" in top:
            it = top["idle_traffic"]
            row(f"9. idle API-server requests per minute at {top['runtimes']} runtimes (all clients)",
                f"{sum(it['apiserver_requests'].values()) * 60 / it['seconds']:.0f}", "-", "-")
    sa = r.get("stop_all")
    if sa:
        row(f"9. `/stop` of all {sa['runtimes']} runtimes at concurrency {sa['concurrency']}: until no owned object remains",
            f"{sa['seconds_until_no_owned_object']:.1f} s (all answered after {sa['seconds_until_all_stop_answered']:.1f} s; "
            f"p50 / p99 {pcts(sa['stop_latency_s'], ('p50', 'p99'))})", "-", "-")
    st = r["stop"]
    row(f"5. `/stop` of {st['runtimes']} runtimes at concurrency {st['concurrency']}: until no owned object remains",
        f"{st['seconds_until_no_owned_object']:.1f} s (all `/stop` answered after "
        f"{st['seconds_until_all_stop_answered']:.1f} s; `/stop` p50 / p99 {pcts(st['stop_latency_s'], ('p50', 'p99'))})",
        "-", "-")
    if proc:
        mp = machine_short(proc["machine"])
        row(f"6. process backend: `/start` -> agent `/alive`, {len(proc['service_start_to_alive_s']['runs'])} runs (median)",
            f"{proc['service_start_to_alive_s']['median']:.2f} s",
            f"agent server cold start, direct: {proc['agent_cold_start_direct_s']['median']:.2f} s",
            f"{proc['ratio_service_over_direct']:.2f}", mp)
        pm = proc["memory"]
        n = pm["runtimes"]
        row(f"6. process backend: service VmRSS with 0 / {n} agent servers", f"{mib(pm['rss_kib_0_runtimes'])} / "
            f"{mib(pm[f'rss_kib_{n}_runtimes'])}", "-", "-", mp)
    else:
        row("6. process backend", "not run", "-", "-", "-")
    m = k8s["machine"]
    c = k8s["cluster"]
    binary = m["runtime_api_bin"]
    root = str(Path(__file__).resolve().parent.parent) + "/"
    if binary.startswith(root):
        binary = binary[len(root):]
    head = (f"Run `{k8s['mode']}` of {k8s['date']}, commit {m.get('git_commit')}, binary `{binary}`; "
            f"machine: {m['cores']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB RAM, kernel {m['kernel']}; "
            f"load average (1 min) {m['loadavg_at_start'][0]:.1f} at the start, {k8s['loadavg_at_end'][0]:.1f} at the end; "
            f"Kubernetes {c['kubernetes']} + kwok {c['kwok']}, {c['nodes']} fake nodes, all on this machine"
            + (f" (controller manager without {', '.join(c['controllers_off'])})" if c.get("controllers_off") else "")
            + (f"; process part: agent server {proc['machine'].get('openhands_agent_server')}, {proc['date']}" if proc else "")
            + ".\n\n")
    return (head + "| measurement | runtime-api | limit (measured in the same run) | ratio | machine |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def plot(k8s: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    reads = sorted(k8s["results"]["reads"], key=lambda r: r["runtimes"])
    ns = [r["runtimes"] for r in reads]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ids = max(r["batch_ids"] for r in reads)
    series = [("list", "/list?status=all", "tab:blue"), ("batch", f"/sessions/batch ({ids} ids)", "tab:orange")]
    for key, label, color in series:
        for p, style in (("p50", "-o"), ("p99", "--s")):
            ys = [r[key]["latency_s"][p] * 1000 for r in reads]
            ax.plot(ns, ys, style, color=color, label=f"{label} {p}")
            for x, y in zip(ns, ys):
                ax.annotate(f"{y:.2f}" if y < 1 else f"{y:.1f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([f"{n:,}" for n in ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("runtimes (each: record, Secret, Pod, Service, Ingress; one shared NetworkPolicy)")
    ax.set_ylabel("latency (ms)")
    m = k8s["machine"]
    worst = max(max(r["list"]["apiserver_requests_per_read"], r["batch"]["apiserver_requests_per_read"]) for r in reads)
    ax.set_title(f"runtime-api read latency vs runtimes ({k8s['mode']} run, {k8s['date'][:10]})\n"
                 f"{m['cores']} cores, {m['mem_total_gib']} GiB; Kubernetes {k8s['cluster']['kubernetes']} + kwok; "
                 f"at most {worst:g} API-server GET/LIST per read", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--readme", type=Path)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    k8s = json.loads((args.dir / "kubernetes.json").read_text())
    pp = args.dir / "process_backend.json"
    proc = json.loads(pp.read_text()) if pp.exists() else None
    md = table(k8s, proc)
    print(md)
    (args.dir / "table.md").write_text(md)
    (args.dir / "bench.json").write_text(json.dumps(
        {"kubernetes": k8s, "process_backend": proc, "table_markdown": md}, indent=2) + "\n")
    if not args.no_plot:
        png = args.dir / "latency_vs_runtimes.png"
        plot(k8s, png)
        print(f"wrote {png}", file=sys.stderr)
    if args.readme:
        text = args.readme.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{args.readme} lacks the {BEGIN} / {END} markers")
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        args.readme.write_text(f"{head}{BEGIN}\n{md}{END}{tail}")
        print(f"updated {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
