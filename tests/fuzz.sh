#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, docs/fuzzing.md) with sanitizers into .build-fuzz and runs each for
# SECONDS (default 60). New inputs go to .build-fuzz/corpus/TARGET (kept between runs), the committed seeds
# in fuzz/corpus/TARGET are read first, and a crasher is written to .build-fuzz/artifacts/. Exit 1 on a crash.
set -euo pipefail
seconds=${1:-60}
scratch=.build-fuzz
build=(swift build --scratch-path "$scratch" -c release --sanitize fuzzer --sanitize address -Xswiftc -DALB_LIBFUZZER)
mkdir -p "$scratch/artifacts"
for target in manifest http1; do
  "${build[@]}" --product "alb-fuzz-$target" 2>&1 | tail -1
done
status=0
passed=0
failed=0
for target in manifest http1; do
  corpus="$scratch/corpus/$target"
  log="$scratch/fuzz-$target.log"
  mkdir -p "$corpus"
  # The Swift runtime's own backtracer would wait on a crash that libFuzzer reports anyway.
  if SWIFT_BACKTRACE=enable=no "$scratch/release/alb-fuzz-$target" -max_total_time="$seconds" -timeout=5 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$target-" \
      "$corpus" "fuzz/corpus/$target" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    # libFuzzer's last line: coverage, and the corpus it keeps (inputs/size) after dropping redundant ones.
    final=$(grep -E "^#[0-9]+.*(DONE|cov:)" "$log" | tail -1 | grep -oE "cov: [0-9]+ ft: [0-9]+ corp: [^ ]+" || true)
    echo "fuzz $target: $runs runs in ${seconds}s, no crash; $final; $(ls "$corpus" | wc -l) files in $corpus, $(ls "fuzz/corpus/$target" | wc -l) seeds"
    passed=$((passed + 1))
  else
    status=1
    failed=$((failed + 1))
    echo "fuzz $target: FAILED (log: $log)"
    grep -E "ERROR|Fatal error|invariant|Test unit written|SUMMARY" "$log" | head -20 || tail -40 "$log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
exit $status
