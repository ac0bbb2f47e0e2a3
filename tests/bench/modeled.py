# SPDX-License-Identifier: GPL-2.0
"""`make bench`, section 7, guest side: issue 21's workloads on the modeled hardware TPM.

The guest boots with tests/bench/tpm_proxy.py between QEMU and swtpm (scripts/guest.sh,
TPMRS_TPM_MODEL=hw): every TPM command takes what it takes on a discrete TPM
(tests/bench/tpm_model.py), so a resource manager's context switches cost what they cost on
the TPMs people own. Each node configuration runs three workloads, each client signing with
one ECC P-256 key and one HMAC session of its own:

  steady      one client signing in a loop (tpm2-pkcs11 after login, a TLS server's key);
  2 in turns  two clients, one open file each, signing in turns;
  4 in turns  four such clients.

For each: signs per second, p50/p99 latency of a sign, TPM commands per sign and the TPM's
modeled time per sign, both from the proxy's log (a line per TPM command it relayed, written
before the response leaves the proxy; the bench kernel sends no TPM command of its own).

Node configurations (TPMRS_BENCH_HW_CONFIGS, comma-separated, default all of CONFIGS): a
node and, for tpmrs0, the module parameters tpmrs.ko is loaded with for it. A configuration
whose parameters tpmrs.ko does not declare (modinfo) is reported as skipped, not run: the
list can name what the module will have before it has it (resident=1, issue 21)."""

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "guest"))
sys.path.insert(0, HERE)
import tpm  # noqa: E402
import tpm_model  # noqa: E402
from tpm import Node  # noqa: E402

# name: (node, tpmrs.ko's parameters; None: the node is the kernel's, tpmrs stays as it is).
CONFIGS = {
    "tpmrm0": ("/dev/tpmrm0", None),
    "tpmrs0": ("/dev/tpmrs0", {}),
    "tpmrs0-resident": ("/dev/tpmrs0", {"resident": "1"}),
    # What the reserve costs: resident contexts with no slot kept for the kernel and tpmrm0.
    "tpmrs0-resident-noreserve": ("/dev/tpmrs0", {"resident": "1", "reserve_objects": "0",
                                                  "reserve_sessions": "0"}),
}
WORKLOADS = (("steady", 1), ("2 in turns", 2), ("4 in turns", 4))
QUICK = os.environ.get("TPMRS_BENCH_QUICK") == "1"
SECONDS = 5.0 if QUICK else 15.0
OUT = os.environ.get("TPMRS_OUT", "/tmp")
LOG = os.path.join(OUT, "swtpm", "proxy.log")


def ko_path():
    return os.path.join(os.environ["TPMRS_ROOT"], os.environ.get("TPMRS_BENCH_KO", "tpmrs.ko"))


def load_tpmrs(params):
    """(Re)loads tpmrs.ko with `params`; returns None, or why the configuration cannot run."""
    ko = ko_path()
    declared = {line.split(":", 1)[0] for line in
                subprocess.run(["modinfo", "-p", ko], capture_output=True, text=True).stdout.splitlines()}
    missing = [p for p in params if p not in declared]
    if missing:
        return f"tpmrs.ko has no parameter {', '.join(missing)}"
    subprocess.run(["rmmod", "tpmrs"], capture_output=True)
    p = subprocess.run(["insmod", ko] + [f"{k}={v}" for k, v in params.items()], capture_output=True, text=True)
    if p.returncode != 0:
        return f"insmod failed: {p.stderr.strip()}"
    return None


def log_offset():
    return os.path.getsize(LOG)


def tpm_commands(start):
    """The TPM commands the proxy relayed since `start`: {name: count} and their modeled ms."""
    counts, model_ms = {}, 0.0
    with open(LOG) as f:
        f.seek(start)
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[1] == "tpm":
                name = parts[6] if len(parts) > 6 else parts[2]
                counts[name] = counts.get(name, 0) + 1
                model_ms += float(parts[3])
    return counts, model_ms


def signing_key(n):
    rsp = n.transact(tpm.create_primary(tpm.ECC_SIGNING_TEMPLATE))
    assert tpm.rc_of(rsp) == 0, hex(tpm.rc_of(rsp))
    key = tpm.response_handle(rsp)
    return key, tpm.read_public_name(n, key)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def workload(config, node, name, clients):
    """`clients` open files, each with a key and a session, signing in turns for SECONDS."""
    files = [Node(node) for _ in range(clients)]
    try:
        setup = []
        for n in files:
            key, kname = signing_key(n)
            setup.append((n, key, kname, tpm.HmacSession(n)))
        # One sign each first, out of the count: whatever a first use costs is not steady.
        for n, key, kname, s in setup:
            assert tpm.rc_of(tpm.sign_with_session(n, key, kname, s)) == 0
        lat, errors = [], 0
        start = log_offset()
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < SECONDS:
            n, key, kname, s = setup[i % clients]
            i += 1
            a = time.perf_counter()
            try:
                rc = tpm.rc_of(tpm.sign_with_session(n, key, kname, s))
            except OSError:
                rc = -1
            lat.append((time.perf_counter() - a) * 1000)
            errors += rc != 0
        seconds = time.monotonic() - t0
        counts, model_ms = tpm_commands(start)
    finally:
        for n in files:
            n.close()
    signs = len(lat) - errors
    total = sum(counts.values())
    return {"config": config, "node": node, "workload": name, "clients": clients, "signs": signs,
            "errors": errors, "seconds": round(seconds, 1),
            "signs_per_s": round(signs / seconds, 2),
            "p50_ms": round(statistics.median(lat), 1), "p99_ms": round(pct(lat, 0.99), 1),
            "tpm_per_sign": round(total / len(lat), 2) if lat else None,
            "tpm_ms_per_sign": round(model_ms / len(lat), 1) if lat else None,
            "tpm_commands": counts}


def run(results, progress):
    names = [c for c in os.environ.get("TPMRS_BENCH_HW_CONFIGS", ",".join(CONFIGS)).split(",") if c]
    results["modeled_model"] = [list(r) for r in tpm_model.table_rows()]
    rows, skipped = [], {}
    results["modeled"], results["modeled_skipped"] = rows, skipped
    for config in names:
        if config not in CONFIGS:
            skipped[config] = "unknown configuration"
            continue
        node, params = CONFIGS[config]
        if params is not None:
            why = load_tpmrs(params)
            if why:
                skipped[config] = why
                progress(f"modeled TPM: {config} skipped: {why}")
                continue
        for name, clients in WORKLOADS:
            progress(f"modeled TPM: {name} ({clients} client{'s' * (clients > 1)}) on {config}")
            try:
                rows.append(workload(config, node, name, clients))
            except (OSError, AssertionError) as e:
                rows.append({"config": config, "node": node, "workload": name, "clients": clients,
                             "error": str(e) or type(e).__name__})
    # Back to the module as the other sections had it.
    if any(CONFIGS.get(c, (None, None))[1] for c in names):
        load_tpmrs({})
