#!/usr/bin/env bash
# Validates every example set: sets with expected.txt must fail with exactly that output, others must pass.
# A set whose alb manifests sit beside other YAML (examples/kubernetes) keeps them in a manifests/ folder.
set -uo pipefail
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
failed=0 passed=0
for dir in examples/*/; do
  name=$(basename "$dir")
  if [[ -f $dir/expected.txt ]]; then
    out=$(cd "$dir" && "$bin" validate . 2>/dev/null); code=$?
    if [[ $code -eq 1 && "$out" == "$(cat "$dir/expected.txt")" ]]; then passed=$((passed + 1));
    else failed=$((failed + 1)); echo "example $name: expected exit 1 and expected.txt, got exit $code:"; echo "$out"; fi
  else
    root=$dir; [[ -d $dir/manifests ]] && root=$dir/manifests
    if out=$("$bin" validate "$root" 2>&1); then passed=$((passed + 1));
    else failed=$((failed + 1)); echo "example $name does not validate:"; echo "$out"; fi
  fi
done
echo "examples: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
