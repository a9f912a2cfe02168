#!/usr/bin/env bash
# Bring a fresh Debian 12 machine (or this checkout) to the point where
# `make test` runs: system packages, kernel headers for bcc, bpffs, and the venv.
# Safe to run again: every step checks first and skips what is already done.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
STAMP="$VENV/.infw-stamp"
# Always Debian's interpreter: bcc is a Debian package (python3-bpfcc) built for
# it, and a pyenv/other python3 on PATH would not see it.
SYS_PY=/usr/bin/python3
APT_PACKAGES=(python3-bpfcc python3-venv linux-headers-amd64 iproute2 nftables
              iptables netsniff-ng tmux iputils-ping xdp-tools ethtool)

export DEBIAN_FRONTEND=noninteractive
log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt, kernel headers, bpffs); try: sudo $0"

# --- 1. Debian packages -----------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "Debian packages present: ${APT_PACKAGES[*]}"
fi

# --- 2. kernel headers for bcc ----------------------------------------------
# bcc wants /lib/modules/$(uname -r)/build (the arch tree: generated headers,
# .config) and .../source (the common tree: include/linux/kconfig.h). A kernel
# without its own headers gets Debian's linux-headers-amd64 trees: an XDP
# program needs only the uapi headers, which do not change between versions.
KBUILD="/lib/modules/$(uname -r)"
arch_tree=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
common_tree=${arch_tree%-amd64}-common
if [[ -e $KBUILD/build/include && -e $KBUILD/source/include/linux/kconfig.h ]]; then
    log "kernel headers found at $KBUILD/build and $KBUILD/source"
else
    [[ -n $arch_tree && -d $common_tree ]] || die "no /usr/src/linux-headers-*-amd64 and -common trees; apt-get install linux-headers-amd64"
    log "running kernel ships no headers; XDP programs need only the uapi headers, so linking Debian's linux-headers-amd64 tree"
    log "  $KBUILD/build -> $arch_tree"
    log "  $KBUILD/source -> $common_tree"
    mkdir -p "$KBUILD"
    ln -sfn "$arch_tree" "$KBUILD/build"
    ln -sfn "$common_tree" "$KBUILD/source"
fi

# --- 3. bpffs (pinned maps survive the console) -----------------------------
if mountpoint -q /sys/fs/bpf && [[ $(stat -f -c %T /sys/fs/bpf) == bpf_fs ]]; then
    log "bpffs mounted at /sys/fs/bpf"
else
    log "mounting bpffs at /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
fi

# --- 4. virtualenv ----------------------------------------------------------
if [[ -x $VENV/bin/python ]]; then
    log "venv exists at $VENV"
else
    log "creating venv at $VENV (system site-packages, so Debian's bcc is visible)"
    "$SYS_PY" -m venv --system-site-packages "$VENV"
fi

# --- 5. project + dev dependencies ------------------------------------------
want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [[ $want == "$have" ]] && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("infw")' 2>/dev/null; then
    log "infw[dev] already installed (pyproject.toml unchanged)"
else
    log "installing infw in editable mode with dev extras"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[dev]"
    printf '%s\n' "$want" >"$STAMP"
fi

# --- 6. bcc sanity check ----------------------------------------------------
if "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
    log "bcc importable from the venv ($("$VENV/bin/python" -c 'import bcc, os; print(os.path.dirname(bcc.__file__))'))"
else
    die "'import bcc' fails in $VENV: install the Debian package python3-bpfcc (apt-get install python3-bpfcc) and make sure the venv was made with $SYS_PY --system-site-packages (rm -rf $VENV and re-run)"
fi

log "done"
