"""Prints the Markdown summary of a bench/run.sh result directory.

    python3 bench/summarize.py target/bench

The ratios and targets are the ones BENCHMARKS.md defines; the raw JSON files
stay the record.
"""

import json
import sys
from pathlib import Path

BACKENDS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
RUNS = ["floor", "getme", "login", "signup", "mixed-flood"]


def load(directory, name):
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def by_name(run, name):
    return next(load for load in run["loads"] if load["name"] == name)


def verdict(passed):
    return "✓" if passed else "✗"


def main(directory):
    bcrypt = load(directory, "bcrypt")
    backends = [b for b in BACKENDS if load(directory, f"{b}-rss") is not None]
    runs = {(b, r): load(directory, f"{b}-{r}") for b in backends for r in RUNS}
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
        "GetMe ÷ floor (OK/s)": "≥ 0.5",
        "Login ÷ bcrypt limit (OK/s)": "≥ 0.9",
        "Signup ÷ bcrypt limit (OK/s)": "≥ 0.9",
        "GetMe p99 during the login flood": "< 20 ms",
        "Peak RSS (VmHWM)": "< 64 MiB",
    }
    cells = {row: [] for row in rows}
    for b in backends:
        floor = by_name(runs[b, "floor"], "getme")["ok_rps"]
        getme = by_name(runs[b, "getme"], "getme")["ok_rps"]
        ratio = getme / floor if floor else 0.0
        cells["GetMe ÷ floor (OK/s)"].append(
            f"{ratio:.2f} ({getme:.0f} / {floor:.0f}) {verdict(ratio >= 0.5)}"
        )
        for scenario, limit in [("login", "login_limit_rps"), ("signup", "signup_limit_rps")]:
            ok = by_name(runs[b, scenario], scenario)["ok_rps"]
            ratio = ok / bcrypt[limit]
            cells[f"{scenario.capitalize()} ÷ bcrypt limit (OK/s)"].append(
                f"{ratio:.2f} ({ok:.2f} / {bcrypt[limit]:.2f}) {verdict(ratio >= 0.9)}"
            )
        flood = runs[b, "mixed-flood"]
        p99 = by_name(flood, "getme")["latency_ms"]["p99"]
        logins = by_name(flood, "login-flood")
        cells["GetMe p99 during the login flood"].append(
            f"{p99:.2f} ms (flood sent {logins['offered_rps']:.1f}/s, "
            f"OK {logins['ok_rps']:.1f}/s) {verdict(p99 < 20)}"
        )
        mib = load(directory, f"{b}-rss")["vm_hwm_kib"] / 1024
        cells["Peak RSS (VmHWM)"].append(f"{mib:.1f} MiB {verdict(mib < 64)}")

    print("| measure | target | " + " | ".join(BACKENDS[b] for b in backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    for row, target in rows.items():
        print(f"| {row} | {target} | " + " | ".join(cells[row]) + " |")

    print("\n### Every run\n")
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
