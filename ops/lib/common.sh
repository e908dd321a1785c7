# shellcheck shell=bash
# Helpers shared by the ops/ scripts. Source it; do not run it.
#
# Everything here is plain bash so that a fresh Debian 12 machine needs
# nothing beyond its base system to run ops/setup.

# Wall-clock start of the calling script, for the "[ 12.3s]" prefixes.
# EPOCHREALTIME (bash >= 5) gives sub-second resolution without forking date.
_ops_t0=${EPOCHREALTIME/[.,]/}

# Microseconds since the script started.
ops_elapsed_us() {
    local now=${EPOCHREALTIME/[.,]/}
    echo $((now - _ops_t0))
}

# Format microseconds as seconds with one decimal, e.g. 12345678 -> 12.3.
ops_fmt_us() {
    local us=$1
    printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}

# One progress line, prefixed with the time since the script started, so
# slow steps stand out in CI logs.
say() {
    printf '[%6ss] %s\n' "$(ops_fmt_us "$(ops_elapsed_us)")" "$*"
}

warn() {
    printf '%s: warning: %s\n' "${0##*/}" "$*" >&2
}

die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

need_root() {
    [[ ${EUID} -eq 0 ]] || die "must run as root (try: sudo $0)"
}

# Print the packages from the arguments that are not installed.
# dpkg-query is local and fast, so a second run does no apt work at all.
missing_packages() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        # "ii " = desired install, currently installed, no error.
        [[ $status == "ii "* ]] || echo "$pkg"
    done
}

# Install whichever of the given Debian packages are missing. apt-get update
# runs only when something must be installed, and only once per process.
ensure_packages() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    say "installing packages: ${missing[*]}"
    if [[ -z ${_ops_apt_updated:-} ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        _ops_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Print the Debian mirror URL configured on this host for SUITE (e.g.
# bookworm). We never hard-code a mirror: machines that build sandpit may only
# reach their own configured mirror. Order of preference:
#   1. $SANDPIT_DEBIAN_MIRROR, if set (an explicit override);
#   2. /etc/apt/sources.list.d/debian.sources (deb822): URIs of the first
#      "deb" entry whose Suites contain SUITE as a whole word and whose
#      Components contain main;
#   3. /etc/apt/sources.list: the first "deb [options] URL SUITE ... main" line;
#   4. the same search for the host's own suite: one Debian archive serves every
#      release, so a Debian 12 host that lists only bookworm builds trixie
#      images from the archive it already uses.
debian_mirror() {
    local suite=$1 url="" host_suite
    if [[ -n ${SANDPIT_DEBIAN_MIRROR:-} ]]; then
        echo "${SANDPIT_DEBIAN_MIRROR}"
        return 0
    fi
    url=$(_ops_listed_mirror "$suite")
    host_suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [[ -z $url && -n $host_suite && $host_suite != "$suite" ]]; then
        url=$(_ops_listed_mirror "$host_suite")
    fi
    if [[ -z $url ]]; then
        die "no Debian mirror for '$suite' found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list;
add one (e.g. a 'deb <mirror-url> $suite main' line) or set SANDPIT_DEBIAN_MIRROR=<mirror-url>"
    fi
    case $url in
        http://* | https://* | file:/*) ;;
        *) die "the apt source for '$suite' uses '$url', which debootstrap cannot use; set SANDPIT_DEBIAN_MIRROR=<http(s) mirror-url>" ;;
    esac
    echo "${url%/}"
}

# The URI of the host's apt source for SUITE (main component), or nothing.
_ops_listed_mirror() {
    local suite=$1 url=""
    local deb822=/etc/apt/sources.list.d/debian.sources
    if [[ -r $deb822 ]]; then
        # Paragraphs are separated by blank lines; field names are
        # case-insensitive in deb822. Comment lines are skipped.
        url=$(awk -v suite="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") &&
                    (" " comps " ") ~ / main / && enabled !~ /^no$/ && uris != "" && found == "") {
                    split(uris, u, " "); found = u[1]
                }
                types = suites = comps = uris = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val); gsub(/[ \t]+/, " ", val)
                if (key == "types") types = val
                else if (key == "suites") suites = val
                else if (key == "components") comps = val
                else if (key == "uris") uris = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush(); if (found != "") print found }
        ' "$deb822")
    fi
    if [[ -z $url && -r /etc/apt/sources.list ]]; then
        url=$(awk -v suite="$suite" '
            /^[ \t]*deb[ \t]/ {
                i = 2
                # Skip an optional "[arch=... signed-by=...]" block.
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                uri = $i; s = $(i + 1)
                has_main = 0
                for (j = i + 2; j <= NF; j++) if ($j == "main") has_main = 1
                if (s == suite && has_main) { print uri; exit }
            }
        ' /etc/apt/sources.list)
    fi
    echo "$url"
}
