#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, docs/fuzzing.md) with sanitizers into .build-fuzz/build-TARGET and runs
# each for SECONDS (default 60). New inputs go to .build-fuzz/corpus/TARGET (kept between runs), the committed
# seeds in fuzz/corpus/TARGET are read first, and a crasher is written to .build-fuzz/artifacts/. Exit 1 on a
# crash, or when a search gets no coverage feedback (an uninstrumented build proves nothing).
set -euo pipefail
seconds=${1:-60}
root=.build-fuzz
mkdir -p "$root/artifacts"
# One scratch directory per target: building the two products one after the other in one directory once
# left the second linked without coverage instrumentation (libFuzzer loaded about 2,400 counters instead
# of about 60,000 and found nothing).
# SwiftPM passes its sanitizers as one `-sanitize=` flag each, in an order that changes from build to build,
# and swiftc keeps only the last such flag: a build got coverage without ASan or ASan without coverage at
# random (the latter is the "no coverage feedback" case below). The combined flag after them settles it.
build() {  # $1: target
  swift build --scratch-path "$root/build-$1" -c release --sanitize fuzzer --sanitize address \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DALB_LIBFUZZER --product "alb-fuzz-$1" 2>&1 | tail -1
}
run() {  # $1: target; libFuzzer's output goes to its log
  # The Swift runtime's own backtracer would wait on a crash that libFuzzer reports anyway.
  SWIFT_BACKTRACE=enable=no "$root/build-$1/release/alb-fuzz-$1" -max_total_time="$seconds" -timeout=5 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$root/artifacts/$1-" \
    "$root/corpus/$1" "fuzz/corpus/$1" >"$root/fuzz-$1.log" 2>&1
}
uninstrumented() {  # $1: target
  grep -q "no interesting inputs were found" "$root/fuzz-$1.log"
}
targets="manifest http1 quic-datagram"
status=0
passed=0
failed=0
for target in $targets; do
  build "$target"
done
for target in $targets; do
  corpus="$root/corpus/$target"
  log="$root/fuzz-$target.log"
  mkdir -p "$corpus"
  run "$target" && ok=1 || ok=0
  if [[ $ok == 1 ]] && uninstrumented "$target"; then
    echo "fuzz $target: no coverage feedback (an uninstrumented build?); building it again from scratch"
    rm -rf "$root/build-$target"
    build "$target"
    run "$target" && ok=1 || ok=0
    if [[ $ok == 1 ]] && uninstrumented "$target"; then
      ok=0
      echo "fuzz $target: still no coverage feedback after a clean build"
    fi
  fi
  if [[ $ok == 1 ]]; then
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
