#!/usr/bin/env bash
# `make compat`: .ci/compat/check.sh for every line of .ci/compat/matrix.txt, one after the other (each
# installs a full venv; the machine has 2 cores), then one table. Exit 1 when any combination failed.
#   COMPAT_ONLY=3.3.2   only the lines containing this text
#   COMPAT_DIR=...      where the venvs go (default /tmp/mlops-compat)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MATRIX=${COMPAT_MATRIX:-$HERE/matrix.txt}
ONLY=${COMPAT_ONLY:-}
export COMPAT_DIR=${COMPAT_DIR:-/tmp/mlops-compat}
mkdir -p "$COMPAT_DIR"
COMPAT_SUMMARY=$(mktemp "$COMPAT_DIR/summary.XXXXXX")
export COMPAT_SUMMARY
trap 'rm -f "$COMPAT_SUMMARY"' EXIT

lines=()
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    read -r -a words <<<"$line" || true
    [ ${#words[@]} -gt 0 ] || continue
    [ -z "$ONLY" ] || [[ "${words[*]}" == *"$ONLY"* ]] || continue
    lines+=("${words[*]}")
done <"$MATRIX"
if [ ${#lines[@]} -eq 0 ]; then
    echo "compat: no combination in $MATRIX${ONLY:+ matches '$ONLY'}" >&2
    exit 1
fi

start=$SECONDS
failed=0
for line in "${lines[@]}"; do
    read -r -a args <<<"$line"
    echo "=== compat: ${args[*]}"
    bash "$HERE/check.sh" "${args[@]}" || failed=$((failed + 1))
done

echo
echo "=== compat summary ($((SECONDS - start)) s, ${#lines[@]} combination(s), $failed failed)"
checks=(install lint dag-processor parse-light approval mlops-run)
printf '%-62s %-6s' combination result
printf ' %13s' "${checks[@]}"
printf ' %7s\n' total
while read -r combo verdict fields; do
    declare -A got=()
    for field in $fields; do got[${field%%=*}]=${field#*=}; done
    printf '%-62s %-6s' "$combo" "$verdict"
    for name in "${checks[@]}"; do
        value=${got[$name]:-}
        if [ -z "$value" ]; then cell=-; else cell="${value#*:}s"; [[ $value == PASS:* ]] || cell="FAIL ${cell}"; fi
        printf ' %13s' "$cell"
    done
    printf ' %7s\n' "${got[total]#*:}s"
    unset got
done <"$COMPAT_SUMMARY"
[ "$failed" -eq 0 ]
