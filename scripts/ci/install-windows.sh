#!/usr/bin/env bash
# Installs what building the node agent for Windows (x86_64-pc-windows-gnu) and testing it under
# Wine needs, on Debian 12 as root. Idempotent: every step skips what is already present.
#
#   install-windows.sh          everything (target, packages, shim, prefix)
#   install-windows.sh prefix   only the shim and the Wine prefix (used by .ci/wine-runner)
#   install-windows.sh stop     stop the prefix's wineserver (end of a CI run)
#
# Facts this follows: shared/reference/windows-on-wine.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=x86_64-pc-windows-gnu
WINE_DIR="$ROOT/target/wine"
SHIM_SRC="$ROOT/scripts/ci/wine"
SHIM_DLL="$WINE_DIR/bcryptprimitives.dll"
export WINEPREFIX="${SSIS_WINEPREFIX:-$ROOT/target/wine-prefix}"
export WINEDEBUG="${WINEDEBUG:--all}"
# No display here: keep wineboot from offering the Mono and Gecko installers.
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree=;mshtml=}"
READY="$WINEPREFIX/.ssis-prefix-ready"
PACKAGES=(gcc-mingw-w64-x86-64 wine64 wine libgnutls30)

log() { echo "install-windows: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root for: $*"
    fi
}

install_target() {
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "rustup target add $TARGET"
        rustup target add "$TARGET"
    fi
    rustup target list --installed | grep -qx "$TARGET" || die "rust target $TARGET is not installed"
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
    fi
    command -v x86_64-w64-mingw32-gcc >/dev/null || die "x86_64-w64-mingw32-gcc missing after install"
    command -v wine >/dev/null || die "wine missing after install"
}

build_shim() {
    mkdir -p "$WINE_DIR"
    if [ ! -f "$SHIM_DLL" ] || [ "$SHIM_SRC/bcryptprimitives.c" -nt "$SHIM_DLL" ] \
        || [ "$SHIM_SRC/bcryptprimitives.def" -nt "$SHIM_DLL" ]; then
        log "building bcryptprimitives.dll shim"
        x86_64-w64-mingw32-gcc -shared -O2 -Wall -Werror -o "$SHIM_DLL.tmp" \
            "$SHIM_SRC/bcryptprimitives.c" "$SHIM_SRC/bcryptprimitives.def" -ladvapi32
        mv -f "$SHIM_DLL.tmp" "$SHIM_DLL"
    fi
}

setup_prefix() {
    build_shim
    mkdir -p "$(dirname "$WINEPREFIX")"
    # One creator at a time: parallel cargo runners would otherwise race on wineboot.
    exec 9>"$WINEPREFIX.lock"
    flock 9
    local sys32="$WINEPREFIX/drive_c/windows/system32"
    if [ ! -f "$READY" ]; then
        log "creating Wine prefix $WINEPREFIX"
        wineboot --init
        # A fresh prefix keeps the service database locked (StartServiceW 1055) until it settles.
        wineserver -w
    fi
    if ! cmp -s "$SHIM_DLL" "$sys32/bcryptprimitives.dll"; then
        cp -f "$SHIM_DLL" "$sys32/bcryptprimitives.dll"
    fi
    touch "$READY"
    flock -u 9
}

case "${1:-all}" in
    all)
        start=$(date +%s)
        install_target
        install_packages
        setup_prefix
        log "ready in $(($(date +%s) - start)) s (WINEPREFIX=$WINEPREFIX)"
        ;;
    prefix) setup_prefix ;;
    stop) if command -v wineserver >/dev/null && [ -d "$WINEPREFIX" ]; then wineserver -k || true; fi ;;
    *) die "usage: $0 [all|prefix|stop]" ;;
esac
