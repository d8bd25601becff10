#!/usr/bin/env python3
"""Fails when a crate of the workspace depends on what its layer forbids: the arrows between Settle's
own crates, and the foreign crates (I/O, HTTP, databases, OTLP) that must stay out of a dependency tree.

The rules are the table below; `cargo tree` (normal dependencies, the features a build of that crate
alone resolves) is the evidence. Usage: scripts/crate_layers.py, or --self-test.
"""

import subprocess
import sys

# Settle's crates, bottom up: each may depend only on the Settle crates listed for it.
ALLOWED_SETTLE_DEPENDENCIES = {
    "settle-domain": set(),
    "settle-statements": {"settle-domain"},
    "settle-telemetry": {"settle-domain"},
    "settle-chart": {"settle-domain"},
    "settle-client": {"settle-domain"},
    "settle-core": {"settle-domain", "settle-statements", "settle-telemetry", "settle-chart"},
    "settle-store-sqlite": {"settle-core", "settle-domain", "settle-telemetry", "settle-chart"},
    "settle-store-mongo": {"settle-core", "settle-domain", "settle-telemetry", "settle-chart"},
    "settle-console": {"settle-client", "settle-chart", "settle-domain"},
}

# Foreign crates that must not appear anywhere in a crate's dependency tree.
NO_IO = {"tokio", "mio", "reqwest", "hyper", "axum", "rusqlite", "libsqlite3-sys", "mongodb",
         "opentelemetry-otlp", "tonic", "opentelemetry_sdk"}
FORBIDDEN = {
    # Pure: no I/O, no async runtime, no HTTP or database crate, no OTLP.
    "settle-domain": NO_IO,
    "settle-statements": NO_IO,
    "settle-chart": NO_IO,
    # The console talks to the daemon's API; it never opens a store or exports telemetry itself.
    "settle-console": {"rusqlite", "libsqlite3-sys", "mongodb", "opentelemetry-otlp", "settle-core",
                       "settle-telemetry", "settle-store-sqlite", "settle-store-mongo"},
    "settle-client": {"rusqlite", "libsqlite3-sys", "mongodb", "opentelemetry-otlp", "settle-core"},
    # The core knows the store ports, never an adapter's driver.
    "settle-core": {"rusqlite", "libsqlite3-sys", "mongodb", "settle-store-sqlite",
                    "settle-store-mongo"},
}


def tree(package):
    """(direct Settle dependencies, every crate in the tree) of `package`."""
    lines = subprocess.run(
        ["cargo", "tree", "--locked", "-p", package, "-e", "normal", "--prefix", "depth"],
        check=True, capture_output=True, text=True).stdout.splitlines()
    direct, everything = set(), set()
    for line in lines:
        depth = len(line) - len(line.lstrip("0123456789"))
        name = line[depth:].split(" ")[0]
        if not name:
            continue
        everything.add(name)
        if int(line[:depth]) == 1 and name.startswith("settle-"):
            direct.add(name)
    everything.discard(package)
    return direct, everything


def problems_of(package, direct, everything):
    found = []
    allowed = ALLOWED_SETTLE_DEPENDENCIES.get(package)
    if allowed is not None:
        for name in sorted(direct - allowed):
            found.append(f"{package} depends on {name}, which its layer does not allow "
                         f"(allowed: {', '.join(sorted(allowed)) or 'no Settle crate'})")
    for name in sorted(FORBIDDEN.get(package, set()) & everything):
        found.append(f"{package}'s dependency tree has {name}, which it must not")
    return found


def self_test():
    planted = problems_of("settle-domain", {"settle-core"}, {"settle-core", "tokio", "serde"})
    assert len(planted) == 2, planted
    assert problems_of("settle-client", {"settle-domain"}, {"reqwest", "tokio"}) == []
    print("crate_layers.py: the self-test found the planted arrow and crate, and nothing else")
    return 0


def main(arguments):
    if arguments == ["--self-test"]:
        return self_test()
    failures = []
    for package in sorted(set(ALLOWED_SETTLE_DEPENDENCIES) | set(FORBIDDEN)):
        direct, everything = tree(package)
        failures += problems_of(package, direct, everything)
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        return 1
    print(f"crate layers hold for {len(ALLOWED_SETTLE_DEPENDENCIES)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
