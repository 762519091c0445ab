#!/usr/bin/env bash
# Proves scripts/check-deps.py on small trees: each folder here is a src/ and
# include/ of its own, compiled into objects, checked, and held to its
# `expect` file: "ok" (the check passes) or the lines the check must print
# (and then fail with a non-zero exit).
set -u
here=$(cd "$(dirname "$0")" && pwd)
check="$here/../../scripts/check-deps.py"
CC=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0
for dir in "$here"/*/; do
    name=$(basename "$dir")
    objs="$tmp/$name"
    built=1
    while IFS= read -r src; do
        rel=${src#"$dir"src/}
        mkdir -p "$objs/$(dirname "$rel")"
        "$CC" -std=c11 -Wall -Wextra -Werror -I"${dir}include" -c "$src" -o "$objs/${rel%.c}.o" || built=0
    done < <(find "${dir}src" -name '*.c' | sort)
    out=$(python3 "$check" --root "$dir" --objects "$objs" 2>&1); rc=$?
    ok=$built
    if [ "$(head -n1 "$dir/expect")" = ok ]; then
        [ "$rc" -eq 0 ] || ok=0
    else
        [ "$rc" -ne 0 ] || ok=0
        while IFS= read -r line; do
            grep -qF -- "$line" <<<"$out" || { ok=0; echo "   missing: $line"; }
        done < "$dir/expect"
    fi
    if [ "$ok" -eq 1 ]; then
        passed=$((passed + 1)); echo "[PASS] check-deps: $name"
    else
        failed=$((failed + 1)); echo "[FAIL] check-deps: $name (exit $rc)"; echo "$out" | sed 's/^/   /'
    fi
done
echo "check-deps fixtures: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
