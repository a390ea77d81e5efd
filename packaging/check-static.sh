#!/usr/bin/env bash
# Checks that need no container: the man page against `peerjs --help` (every long option in
# one appears in the other; every option of --help in the SYNOPSIS and, but --help, --version
# and --config, in the CONFIGURATION key list, and nothing there that --help lacks), `mandoc -Tlint`, `man --warnings`, and the systemd units
# (`systemd-analyze verify` where the binary is installed, and the `systemd-analyze security`
# exposure of peerjs.service, printed and held at or below MAX_EXPOSURE; and of peerjs.service
# with the clustering drop-in packaging/systemd/peerjs-cluster.conf.example in
# peerjs.service.d/, held at or below MAX_CLUSTER_EXPOSURE; a unit line systemd ignores fails).
# Usage: packaging/check-static.sh [path/to/peerjs]   (default: .build/debug/peerjs)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-.build/debug/peerjs}
page=man/peerjs.8
# 1.1: the chroot syscall (@mount, 0.2) and CAP_SYS_CHROOT/CAP_KILL are kept on purpose;
# see packaging/systemd/peerjs.service. Raise only with a reason.
max_exposure=${MAX_EXPOSURE:-1.1}
# 1.9: the drop-in opens the network for the cluster role (PrivateNetwork=no 0.5, AF_INET and
# AF_INET6 0.3, an IPAddressAllow= entry beyond localhost 0.1); see the drop-in's comments.
max_cluster_exposure=${MAX_CLUSTER_EXPOSURE:-1.9}
status=0

[ -x "$binary" ] || { echo "check-static: no binary at $binary (build first)" >&2; exit 1; }
help_options=$("$binary" --help | grep -oE -- '(^|[ ,(])--[a-z][a-z0-9_-]*' | grep -oE -- '--[a-z0-9_-]+' | sort -u)
page_options=$(grep -oE 'Fl -[a-z][a-z0-9_-]*' "$page" | sed 's/^Fl -/--/' | sort -u)
only_help=$(comm -23 <(echo "$help_options") <(echo "$page_options"))
only_page=$(comm -13 <(echo "$help_options") <(echo "$page_options"))
if [ -n "$only_help" ]; then echo "man drift: in --help but not in $page:" $only_help >&2; status=1; fi
if [ -n "$only_page" ]; then echo "man drift: in $page but not in --help:" $only_page >&2; status=1; fi
[ "$status" -eq 0 ] && echo "man page: all $(echo "$help_options" | wc -l) long options of --help documented, none extra"

# The SYNOPSIS and the CONFIGURATION key list, against the options of --help. One line per
# option of --help, its names (`-p --port`, `--allow_discovery --allow-discovery`): a name
# stops at its first blank (a value placeholder or the help text follows).
help_groups=$("$binary" --help | awk '/^  -/ {
    line = $0; sub(/^ +/, "", line); n = split(line, parts, /, /); names = ""
    for (i = 1; i <= n; i++) { name = parts[i]; sub(/ .*/, "", name); names = names " " name; if (parts[i] ~ / /) break }
    print substr(names, 2) }')
synopsis=$(sed -n '/^\.Sh SYNOPSIS/,/^\.Sh DESCRIPTION/p' "$page" | grep -oE 'Fl -?[A-Za-z][A-Za-z0-9_-]*' | sed 's/^Fl /-/' | sort -u)
config_keys=$(sed -n '/^The keys are$/,/^\.Bd/p' "$page" | grep '^\.Li' | sed 's/^\.Li//' | grep -oE '[a-z][a-z0-9_]*' | sort -u)
drift() { echo "man drift: $*" >&2; status=1; }
while read -r names; do
    [ -n "$names" ] || continue
    found=0; keyed=0
    for name in $names; do
        grep -qxF -- "$name" <<<"$synopsis" && found=1
        key=$(echo "${name#--}" | tr - _)
        [[ $name == --* ]] && grep -qxF -- "$key" <<<"$config_keys" && keyed=1
    done
    [ "$found" -eq 1 ] || drift "--help option ($names) missing from the SYNOPSIS of $page"
    case " $names " in *" --help "*|*" --version "*|*" --config "*) continue ;; esac
    [ "$keyed" -eq 1 ] || drift "--help option ($names) missing from the CONFIGURATION key list of $page"
done <<<"$help_groups"
for name in $synopsis; do
    grep -qE -- "(^| )$name( |\$)" <<<"$help_groups" || drift "SYNOPSIS option $name of $page is not in --help"
done
for key in $config_keys; do
    grep -qE -- "(^| )--($key|${key//_/-})( |\$)" <<<"$help_groups" || drift "CONFIGURATION key $key of $page is not an option of --help"
done
[ "$status" -eq 0 ] && echo "man page: SYNOPSIS and CONFIGURATION keys match the $(echo "$help_groups" | wc -l) options of --help"

# (mandoc also mentions its own outdated database of installed pages; that is not the page's fault.)
lint=$(mandoc -Tlint -Wstyle "$page" 2>&1) && lint_status=0 || lint_status=$?
lint=$(echo "$lint" | grep -v 'outdated mandoc.db' || true)
if [ "$lint_status" -ne 0 ] || [ -n "$lint" ]; then echo "mandoc -Tlint: $lint" >&2; status=1; else echo "mandoc -Tlint: clean"; fi
warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null || true)
if [ -n "$warnings" ]; then echo "man --warnings:" >&2; echo "$warnings" >&2; status=1; fi

# security LABEL LIMIT ARGS...: systemd-analyze security ARGS, its failed lines printed, the
# exposure held at or below LIMIT; a line of the unit or drop-in that systemd ignores (an
# unknown or misspelt setting) fails too.
security() {
    local label=$1 limit=$2 out exposure ignored
    shift 2
    out=$(systemd-analyze security --offline=true --no-pager "$@" 2>&1 || true)
    echo "$out" | grep -E '^✗' || true
    exposure=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "systemd-analyze security: $label exposure ${exposure:-unknown} (limit $limit)"
    ignored=$(echo "$out" | grep -E ':[0-9]+: .*ignoring' || true)
    if [ -n "$ignored" ]; then echo "$ignored" >&2; echo "$label: systemd ignores a line" >&2; status=1; fi
    if [ -z "$exposure" ] || ! awk -v e="$exposure" -v m="$limit" 'BEGIN { exit !(e <= m) }'; then
        echo "$out" >&2
        echo "$label: exposure ${exposure:-unknown} above $limit" >&2
        status=1
    fi
}
security peerjs.service "$max_exposure" packaging/systemd/peerjs.service
# Clustering: the unit as the drop-in changes it, read the way systemd reads it (from a unit
# directory of a scratch root, the drop-in in peerjs.service.d/).
root=$(mktemp -d /tmp/peerjs-check-static.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system/peerjs.service.d"
cp packaging/systemd/peerjs.service packaging/systemd/peerjs.socket packaging/systemd/peerjs-metrics.socket "$root/etc/systemd/system/"
cp packaging/systemd/peerjs-cluster.conf.example "$root/etc/systemd/system/peerjs.service.d/cluster.conf"
security "peerjs.service + peerjs-cluster.conf.example" "$max_cluster_exposure" --root="$root" peerjs.service
exit "$status"
