#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turns bench.json (tests/bench/bench.py) into a markdown report and a PNG plot.

usage: report.py bench.json bench.md bench.png"""

import json
import sys


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def modeled_section(r):
    """Section 7: issue 21's workloads on the modeled hardware TPM, each configuration
    beside tpmrm0 (signs/s ratio: higher is better; p50 ratio: lower is better)."""
    rows = r["modeled"]
    base = {x["workload"]: x for x in rows if x["config"] == "tpmrm0" and "error" not in x}
    out = []
    for x in rows:
        if "error" in x:
            out.append([x["workload"], x["config"], f"fails ({x['error'][:60]})"] + ["-"] * 8)
            continue
        b = base.get(x["workload"])
        ratio = f"{x['signs_per_s'] / b['signs_per_s']:.2f}x" if b and b["signs_per_s"] else "-"
        p50 = f"{x['p50_ms'] / b['p50_ms']:.2f}x" if b and b["p50_ms"] else "-"
        out.append([x["workload"], x["config"], x["signs"], x["signs_per_s"], x["p50_ms"], x["p99_ms"],
                    x["tpm_per_sign"], x["tpm_ms_per_sign"], ratio, p50, x["errors"]])
    text = ("## 7. The modeled hardware TPM (issue 21: one key and one HMAC session per client)\n\n"
            "A third boot with tests/bench/tpm_proxy.py between QEMU and swtpm: every TPM command "
            "takes a discrete TPM's time (tests/bench/tpm_model.py, sources in "
            "Documentation/bench/README.md). Each client signs with its own key and session; "
            "\"in turns\": the clients' open files sign one after the other. TPM commands and "
            "the TPM's modeled time per sign are counted by the proxy.\n\n" + table(
                ["workload", "config", "signs", "signs/s", "p50 ms", "p99 ms", "TPM cmds/sign",
                 "TPM ms/sign", "signs/s vs tpmrm0", "p50 vs tpmrm0", "errors"], out) + "\n")
    skipped = r.get("modeled_skipped") or {}
    if skipped:
        text += "\nNot run: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".\n"
    model = r.get("modeled_model")
    if model:
        text += "\nThe model: " + "; ".join(f"{what} {ms:g} ms" for what, ms, _ in model) + ".\n"
    return text


def main(src, md, png):
    r = json.load(open(src))
    nodes = ("/dev/tpmrm0", "/dev/tpmrs0")
    parts = ["# tpmrs benchmark: /dev/tpmrs0 vs /dev/tpmrm0 (one make bench run, both nodes in each guest)\n",
             "Section 1 from a boot with swtpm's command log (it counts from it); sections 2-6 "
             "from a second boot without it (and section 8); section 7 from a third, on the modeled hardware "
             "TPM.\n"]
    errors = [f"- {k}: {v}" for k, v in r.items() if k.endswith("_error")]
    if errors:
        parts.append("Sections that failed:\n" + "\n".join(errors) + "\n")

    def cell(d):
        if "error" in d:
            return f"fails ({d['error'][:40]})"
        return f"{d['tpm']} ({d['per_client']}/cmd)"

    if "traffic" in r:
        rows = []
        # A workload tpmrm0 cannot run at all (its 3-object limit) shows its error.
        for w in r["traffic"]:
            a, b = w["/dev/tpmrm0"], w["/dev/tpmrs0"]
            ratio = f"{a['tpm'] / b['tpm']:.2f}x" if "tpm" in a and "tpm" in b else "-"
            client = b.get("client", a.get("client", "?"))
            rows.append([w["workload"], client, cell(a), cell(b), ratio, f"{client} (1/cmd)"])
        parts.append("## 1. TPM commands per client command (counted on the swtpm side)\n\n" + table(
            ["workload", "client cmds", "tpmrm0", "tpmrs0", "tpmrm0/tpmrs0", "ideal"], rows) + "\n")
    if "latency" in r:
        rows = [[x["op"], x["node"], x["p50_ms"], x["p99_ms"]] for x in r["latency"]]
        parts.append("## 2. Latency per client command (ms)\n\n" + table(["op", "node", "p50", "p99"], rows) + "\n")
    if "throughput" in r:
        procs = sorted({x["procs"] for x in r["throughput"]})
        by = {(x["node"], x["procs"]): x["ops_per_s"] for x in r["throughput"]}
        rows = [[p] + [by.get((n, p), "-") for n in nodes] +
                [f"{by[(nodes[1], p)] / by[(nodes[0], p)]:.2f}" if by.get((nodes[0], p)) else "-"] for p in procs]
        parts.append("## 3. Throughput (signs with an HMAC session per second, all processes)\n\n" + table(
            ["processes", "tpmrm0", "tpmrs0", "tpmrs0/tpmrm0"], rows) + "\n")
    if "exhaustion" in r:
        keys = [k for k in r["exhaustion"][0] if k != "error_detail"]
        details = [f"- {x['node']}: {', '.join(x['error_detail'])}" for x in r["exhaustion"] if x.get("error_detail")]
        parts.append("## 4. Exhaustion (each client holds 3 sessions)\n\n" + table(
            keys, [[x[k] for k in keys] for x in r["exhaustion"]]) + "\n"
            + ("\nErrors seen by clients:\n" + "\n".join(details) + "\n" if details else ""))
    if "context_gap" in r:
        keys = list(r["context_gap"][0])
        gap = r.get("context_gap_max")
        parts.append("## 5. Context gap (an idle client holds a saved session)\n\n"
                     + (f"TPM_PT_CONTEXT_GAP_MAX = {gap}.\n\n" if gap else "") + table(
            keys, [[x[k] for k in keys] for x in r["context_gap"]]) + "\n")
    if "fairshare" in r:
        rows = r["fairshare"]
        keys = [k for k in rows[0] if not k.startswith("probe") and k != "clients"]
        parts.append("## 6. Fair share under exhaustion (issue 10; the clock starts at the go on "
                     "every node; config resident=1: tpmrs.ko reloaded with resident contexts)\n\n"
                     + table(keys, [[x.get(k, "-") for k in keys] for x in rows]) + "\n")
        users = [x for x in rows if "users" in x]
        if users:
            uk = ["workload", "seconds", "node", "config", "uids", "jain over uids", "first uid's share",
                  "longest uid gap s"]
            parts.append("Between users (issue 22): the first uid opens forty files, each of "
                         "twenty others one:\n\n" + table(uk, [[
                             x["workload"], x["seconds"], x["node"], x.get("config", "-"),
                             x["users"]["uids"],
                             x["users"]["jain"], x["users"]["first_uid_share"],
                             x["users"]["longest_gap_s"]] for x in users]) + "\n")
        probes = [x for x in rows if "probe_n" in x]
        if probes:
            pk = ["workload", "seconds", "node", "config", "probe_n", "probe_failed", "probe_p99_ms", "probe_max_ms"]
            parts.append("Fresh open + GetRandom(8) every 100 ms during the 32 x 3 runs:\n\n"
                         + table(pk, [[x.get(k, "-") for k in pk] for x in probes]) + "\n")
    if "scale" in r:
        sk = ["workload", "seconds", "node", "demand", "budget", "ops", "refusals", "jain",
              "fewest_ops", "longest_gap_s", "longest_gap_between_ops_s", "gap_bound_s",
              "wait_max_ms", "probe_p99_ms", "probe_max_ms"]
        parts.append("## 8. At scale (issue 22): 128 and 256 clients, each wanting 3 sessions\n\n"
                     "The bound on a client's longest gap is ceil(demand / budget) x "
                     "SESSION_TIMEOUT + 1 s (Documentation/tpmrs.rst, \"At scale\"): "
                     "longest_gap_s counts from the go, longest_gap_between_ops_s between two "
                     "signs; the probe is a fresh open + GetRandom(8) every 100 ms.\n\n"
                     + table(sk, [[x.get(k, "-") for k in sk] for x in r["scale"]]) + "\n")
    if "modeled" in r:
        parts.append(modeled_section(r))
    if "context_gap" not in r and "context_gap_error" not in r:
        parts.append("## 5. Context gap\n\nNot run (`TPMRS_BENCH_GAP=0`).\n")
    text = "\n".join(parts)
    open(md, "w").write(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if "latency" in r:
        labels = [f"{x['op']}\n{x['node'].split('/')[-1]}" for x in r["latency"]]
        xs = range(len(labels))
        axes[0].bar([i - 0.2 for i in xs], [x["p50_ms"] for x in r["latency"]], 0.4, label="p50")
        axes[0].bar([i + 0.2 for i in xs], [x["p99_ms"] for x in r["latency"]], 0.4, label="p99")
        axes[0].set_xticks(list(xs), labels, fontsize=8)
        axes[0].set_ylabel("ms per client command")
        axes[0].set_title("Latency")
        axes[0].legend()
    if "throughput" in r:
        for n in nodes:
            pts = sorted((x["procs"], x["ops_per_s"]) for x in r["throughput"] if x["node"] == n)
            axes[1].plot([p for p, _ in pts], [o for _, o in pts], marker="o", label=n)
        axes[1].set_xscale("log", base=2)
        axes[1].set_xlabel("concurrent client processes")
        axes[1].set_ylabel("signs/s (all processes)")
        axes[1].set_title("Throughput")
        axes[1].legend()
    fig.suptitle("tpmrs vs tpmrm0 (QEMU TCG + swtpm, bench kernel)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
