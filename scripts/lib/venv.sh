# shellcheck shell=bash
# The repository's .venv, shared by every script that needs it (scripts/test, scripts/demo, bench, chaos).
#
#   . scripts/lib/venv.sh && venv_ensure ".[dev]"     # from the repository root, in a script
#   bash scripts/lib/venv.sh ".[dev]"                 # the same as a command (what scripts/bench and chaos run)
#
# venv_ensure rebuilds a .venv it cannot trust, with one line on stderr saying why: its python is missing or does
# not run (the interpreter it was built from is gone), or it was built by another Python than the one asked for
# (python3 by default: a 3.10 venv when python3 is 3.11). It installs the package (pip install -e SPEC) only when
# the stamp .venv/.install-stamp does not list SPEC with the hash of pyproject.toml and the exact Python version
# inside .venv. So a second run installs nothing (the install is editable: source changes need no reinstall), and
# the demo's "." is satisfied by the tests' ".[dev]".
#
# Environment:
#   DISPATCHER_VENV_PYTHON   the Python to build .venv with (default: python3)
#   DISPATCHER_VENV_INSTALL  a command run (by bash -c, in the repository root, with VENV_DIR and VENV_SPEC set)
#                            instead of the pip install; .venv is then created without pip. For tests.

VENV_DIR=${VENV_DIR:-.venv}
VENV_STAMP=.install-stamp

_venv_say() {
    echo "${VENV_PROG:-scripts/${0##*/}}: $*" >&2
}

# The major.minor version of the Python at $1, or nothing (status 1) when it does not run.
_venv_version() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

# Why the venv at DIR cannot be used with PYTHON, printed on stdout (status 0); status 1 when it is fine or
# absent (absent is not a problem: it is simply built).
venv_problem() {
    local dir=$1 python=$2 want have cfg
    [[ -e $dir || -L $dir ]] || return 1
    if ! want=$(_venv_version "$python"); then
        echo "$python does not run"
        return 0
    fi
    if ! have=$(_venv_version "$dir/bin/python"); then
        echo "its python ($dir/bin/python) is missing or does not run"
        return 0
    fi
    if [[ $have != "$want" ]]; then
        echo "it was built by Python $have and $python is Python $want"
        return 0
    fi
    # A venv whose interpreter was upgraded in place runs the new version over the old one's site-packages:
    # pyvenv.cfg still names the version it was built by.
    cfg=$(sed -n 's/^version\(_info\)\{0,1\} *= *\([0-9]*\.[0-9]*\).*/\2/p' "$dir/pyvenv.cfg" 2>/dev/null | head -n 1)
    if [[ -z $cfg ]]; then
        echo "it has no readable pyvenv.cfg"
        return 0
    fi
    if [[ $cfg != "$want" ]]; then
        echo "its pyvenv.cfg says it was built by Python $cfg and $python is Python $want"
        return 0
    fi
    return 1
}

# What an install depends on: pyproject.toml's hash and the exact Python inside the venv.
venv_stamp() {
    local dir=$1 hash version
    hash=$(sha256sum pyproject.toml | cut -d ' ' -f 1) || return 1
    version=$("$dir/bin/python" -c 'import sys; print(sys.version.split()[0])') || return 1
    echo "$hash python-$version"
}

# Whether SPEC is installed in DIR as of STAMP: the stamp file holds one "STAMP SPEC" line per spec installed;
# "." (the package alone) is part of every spec.
venv_installed() {
    local dir=$1 spec=$2 stamp=$3 line
    [[ -f $dir/$VENV_STAMP ]] || return 1
    while IFS= read -r line; do
        if [[ $line == "$stamp $spec" || ($spec == "." && $line == "$stamp "*) ]]; then
            return 0
        fi
    done <"$dir/$VENV_STAMP"
    return 1
}

_venv_create() {
    local dir=$1 python=$2
    local args=()
    if [[ -n ${DISPATCHER_VENV_INSTALL:-} ]]; then
        args=(--without-pip)
    fi
    "$python" -m venv "${args[@]}" "$dir" && return 0
    rm -rf -- "$dir"  # a half-built venv (no pip) would look sound next time
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        _venv_say "python3 -m venv failed: installing Debian's python3-venv"
        apt-get update && apt-get install -y python3-venv && "$python" -m venv "${args[@]}" "$dir" && return 0
        rm -rf -- "$dir"
    fi
    _venv_say "error: cannot create $dir with $python (Debian/Ubuntu: sudo apt-get install python3-venv)"
    return 1
}

# Make $VENV_DIR usable and the package installed with SPEC (e.g. ".[dev]" or "."); run from the repo root.
venv_ensure() {
    local spec=${1:-.} python=${DISPATCHER_VENV_PYTHON:-python3} why stamp kept
    if why=$(venv_problem "$VENV_DIR" "$python"); then
        _venv_say "rebuilding $VENV_DIR: $why"
        rm -rf -- "$VENV_DIR"
    fi
    if [[ ! -e $VENV_DIR ]]; then
        _venv_create "$VENV_DIR" "$python" || return 1
    fi
    stamp=$(venv_stamp "$VENV_DIR") || return 1
    venv_installed "$VENV_DIR" "$spec" "$stamp" && return 0
    # Lines of an older pyproject.toml or Python are dropped first: a failed install leaves no line for SPEC.
    kept=$(grep -F "$stamp " "$VENV_DIR/$VENV_STAMP" 2>/dev/null || true)
    if [[ -n $kept ]]; then
        printf '%s\n' "$kept" >"$VENV_DIR/$VENV_STAMP"
    else
        : >"$VENV_DIR/$VENV_STAMP"
    fi
    if [[ -n ${DISPATCHER_VENV_INSTALL:-} ]]; then
        VENV_DIR=$VENV_DIR VENV_SPEC=$spec bash -c "$DISPATCHER_VENV_INSTALL" || return 1
    else
        "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" || return 1
    fi
    echo "$stamp $spec" >>"$VENV_DIR/$VENV_STAMP"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run as a command, not sourced
    set -euo pipefail
    VENV_PROG=${VENV_PROG:-scripts/lib/venv.sh}
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    venv_ensure "${1:-.}"
fi
