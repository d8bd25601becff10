#!/usr/bin/env bash
# Runs every test of Settle from a clean checkout, installing what a fresh Debian/Ubuntu machine lacks.
# Usage: ./scripts/test.sh        (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
started_at=$(date +%s)

# --- what the machine needs ---------------------------------------------------------------
# Debian packages: a C compiler for the bundled SQLite.
APT_PACKAGES=(build-essential pkg-config)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; return 1
    fi
}

install_apt_packages() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        step "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install the Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi
if command -v apt-get >/dev/null; then
    install_apt_packages "${APT_PACKAGES[@]}"
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        step "adding the $component component"
        rustup component add "$component"
    fi
done

# The tests talk to servers on 127.0.0.1: never through a proxy the environment may set.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

# --- static checks --------------------------------------------------------------------------
step "formatting (cargo fmt --check)"
cargo fmt --all --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- build once, then test ----------------------------------------------------------------
step "building the workspace (debug, with tests)"
cargo build --workspace --all-targets --locked

step "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

step "all tests passed in $(( $(date +%s) - started_at )) s"
