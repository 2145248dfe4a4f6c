"""Prints the Markdown summary of a bench/run.sh result directory.

    python3 bench/summarize.py target/bench

The ratios and targets are the ones BENCHMARKS.md defines; the raw files
(loadgen's JSON, h2load's text) stay the record.
"""

import json
import re
import sys
from pathlib import Path

BACKENDS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
LOADGEN_RUNS = ["floor", "getme", "login", "signup", "mixed-flood"]
H2LOAD_RUNS = ["floor", "getme", "greeter-checked", "greeter-unchecked", "seeded-getme"]
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def load(directory, name):
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def h2load(directory, name):
    """h2load's text report, as the numbers the summary uses; None if absent."""
    path = directory / f"{name}.h2load.txt"
    if not path.exists():
        return None
    text = path.read_text()
    # "finished in" includes the warm-up; req/s and the counts cover only
    # the measured duration.
    rps = float(re.search(r"^finished in [\d.]+s, ([\d.]+) req/s", text, re.M).group(1))
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
        re.M,
    )
    done, succeeded, failed, errored, timeout = (int(counts.group(i)) for i in range(3, 8))
    codes = re.search(r"^status codes: (.*)$", text, re.M).group(1)
    mean = re.search(
        r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\s", text, re.M
    )
    seconds = done / rps if rps else 0.0
    return {
        "seconds": seconds,
        "done": done,
        "succeeded": succeeded,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "ok_rps": succeeded / seconds if seconds else 0.0,
        "codes": codes,
        "mean_ms": float(mean.group(1)) * UNIT_MS[mean.group(2)] if mean else float("nan"),
    }


def by_name(run, name):
    return next(load for load in run["loads"] if load["name"] == name)


def verdict(passed):
    return "✓" if passed else "✗"


def ratio_cell(numerator, denominator, target):
    if numerator is None or denominator is None:
        return "not measured"
    ratio = numerator["ok_rps"] / denominator["ok_rps"] if denominator["ok_rps"] else 0.0
    return (
        f"{ratio:.2f} ({numerator['ok_rps']:.0f} / {denominator['ok_rps']:.0f}) "
        f"{verdict(ratio >= target)}"
    )


def revocation_cell(report):
    if report is None:
        return "not measured"
    if "not_measured" in report:
        return f"not measured: {report['not_measured']} ✗"
    latency = report["latency_ms"]
    return (
        f"p99 {latency['p99']:.1f} ms (p50 {latency['p50']:.1f}, max {latency['max']:.1f}; "
        f"{report['trials']} trials) {verdict(latency['p99'] < 1000)}"
    )


def rss_cell(report):
    if report is None:
        return "not measured"
    mib = report["vm_hwm_kib"] / 1024
    note = ""
    if report.get("revocations_table") is False:
        note = " (no revocations table: revoked sessions seeded in sessions only)"
    return f"{mib:.1f} MiB{note} {verdict(mib < 64)}"


def main(directory):
    bcrypt = load(directory, "bcrypt")
    backends = [b for b in BACKENDS if load(directory, f"{b}-rss") is not None]
    runs = {(b, r): load(directory, f"{b}-{r}") for b in backends for r in LOADGEN_RUNS}
    h2 = {(b, r): h2load(directory, f"{b}-{r}") for b in backends for r in H2LOAD_RUNS}
    machine = (directory / "machine.txt").read_text().strip().splitlines()

    print("## Results\n")
    for line in machine:
        print(f"- {line}")
    print(
        f"- bcrypt cost {bcrypt['cost']} on one thread, mean of {bcrypt['rounds']}: "
        f"hash {bcrypt['hash_s']:.4f} s, verify {bcrypt['verify_s']:.4f} s; "
        f"bcrypt limit on {bcrypt['cores']} cores: Signup {bcrypt['signup_limit_rps']:.2f}/s, "
        f"Login {bcrypt['login_limit_rps']:.2f}/s "
        f"({bcrypt['parallel_hash_rps']:.2f} hashes/s measured on all cores at once)"
    )
    print()

    rows = {
        "GetMe ÷ floor (h2load, OK/s)": "≥ 0.6",
        "Backend with verifier and revocations ÷ without a check (h2load, OK/s)": "≥ 0.8",
        "Revocation to rejection at another replica (loadgen)": "p99 < 1 s",
        "Revocation to rejection at a subscribed backend (loadgen)": "p99 < 1 s",
        "Login ÷ bcrypt limit (loadgen, OK/s)": "≥ 0.9",
        "Signup ÷ bcrypt limit (loadgen, OK/s)": "≥ 0.9",
        "GetMe p99 during the login flood (loadgen)": "< 20 ms",
        "Peak RSS (VmHWM) under the runs above": "< 64 MiB",
        "Peak RSS (VmHWM) with the seeded sessions": "< 64 MiB",
    }
    cells = {row: [] for row in rows}
    for b in backends:
        cells["GetMe ÷ floor (h2load, OK/s)"].append(
            ratio_cell(h2[b, "getme"], h2[b, "floor"], 0.6)
        )
        # Only a run that was not measured leaves JSON; h2load leaves text.
        checked = load(directory, f"{b}-greeter-checked")
        cells["Backend with verifier and revocations ÷ without a check (h2load, OK/s)"].append(
            f"not measured: {checked['not_measured']} ✗"
            if checked and "not_measured" in checked
            else ratio_cell(h2[b, "greeter-checked"], h2[b, "greeter-unchecked"], 0.8)
        )
        cells["Revocation to rejection at another replica (loadgen)"].append(
            revocation_cell(load(directory, f"{b}-revocation-authd"))
        )
        cells["Revocation to rejection at a subscribed backend (loadgen)"].append(
            revocation_cell(load(directory, f"{b}-revocation-greeter"))
        )
        for scenario, limit in [("login", "login_limit_rps"), ("signup", "signup_limit_rps")]:
            ok = by_name(runs[b, scenario], scenario)["ok_rps"]
            ratio = ok / bcrypt[limit]
            cells[f"{scenario.capitalize()} ÷ bcrypt limit (loadgen, OK/s)"].append(
                f"{ratio:.2f} ({ok:.2f} / {bcrypt[limit]:.2f}) {verdict(ratio >= 0.9)}"
            )
        flood = runs[b, "mixed-flood"]
        p99 = by_name(flood, "getme")["latency_ms"]["p99"]
        logins = by_name(flood, "login-flood")
        cells["GetMe p99 during the login flood (loadgen)"].append(
            f"{p99:.2f} ms (flood sent {logins['offered_rps']:.1f}/s, "
            f"OK {logins['ok_rps']:.1f}/s) {verdict(p99 < 20)}"
        )
        cells["Peak RSS (VmHWM) under the runs above"].append(rss_cell(load(directory, f"{b}-rss")))
        seeded = load(directory, f"{b}-seeded-rss")
        cells["Peak RSS (VmHWM) with the seeded sessions"].append(rss_cell(seeded))

    print("| measure | target | " + " | ".join(BACKENDS[b] for b in backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    for row, target in rows.items():
        print(f"| {row} | {target} | " + " | ".join(cells[row]) + " |")

    seeded = [load(directory, f"{b}-seeded-rss") for b in backends]
    if any(seeded):
        report = next(r for r in seeded if r)
        print(
            f"\nSeeded: {report['live']} live and {report['revoked']} revoked-but-unexpired "
            "sessions, written into the database before authd started."
        )

    print("\n### Throughput runs (h2load)\n")
    print("| run | seconds | 2xx/s | succeeded | failed | errored | timeout | mean ms | HTTP status codes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (b, r), result in h2.items():
        if result is None:
            continue
        print(
            f"| {b}-{r} | {result['seconds']:.1f} | {result['ok_rps']:.0f} | "
            f"{result['succeeded']} | {result['failed']} | {result['errored']} | "
            f"{result['timeout']} | {result['mean_ms']:.2f} | {result['codes']} |"
        )

    print("\n### Status codes and latencies (loadgen)\n")
    print("| run | load | workers | sent/s | answered/s | OK/s | p50 ms | p90 ms | p99 ms | max ms | status codes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (b, r), run in runs.items():
        for load_report in run["loads"]:
            latency = load_report["latency_ms"]
            codes = ", ".join(f"{code} {s['count']}" for code, s in load_report["status"].items())
            print(
                f"| {b}-{r} | {load_report['name']} | {load_report['concurrency']} | "
                f"{load_report['offered_rps']:.1f} | {load_report['rps']:.1f} | "
                f"{load_report['ok_rps']:.1f} | {latency['p50']:.2f} | {latency['p90']:.2f} | "
                f"{latency['p99']:.2f} | {latency['max']:.2f} | {codes} |"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench"))
