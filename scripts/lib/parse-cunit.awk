# Parses the console output of libiscsi's iscsi-test-cu (CUnit verbose mode, the default) into
# one line per test:
#     SUITE.TEST<TAB>PASS|FAIL|SKIP<TAB>first failure message (FAIL) or skip reason (SKIP)
# CUnit prints "  Test: NAME ..." and then the verdict: "passed"/"FAILED" right after the dots
# when the test printed nothing, otherwise alone on a later line. Text after an immediate verdict
# belongs to the teardown and does not change it (CUnit does not count it either).
# A test that printed "[SKIPPED]" before passing is SKIP (CUnit counts it as passed).
# A test without a verdict (the tool or the target died, a timeout) is FAIL.
# The CUnit "Run Summary" test totals come out as "#summary TOTAL RAN PASSED FAILED".
function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
function flush() {
    if (!open) return
    if (status == "") { status = "FAIL"; if (message == "") message = "no verdict (the tool or the target stopped during the test)" }
    if (status == "PASS" && skipped) status = "SKIP"
    if (status == "FAIL" && message == "") message = "FAILED"
    gsub(/\t/, " ", message)
    gsub(/\t/, " ", skipmsg)
    printf "%s.%s\t%s\t%s\n", suite, test, status, (status == "FAIL" ? message : status == "SKIP" ? skipmsg : "")
    open = 0
}
/^Suite: / { flush(); suite = trim(substr($0, 8)); next }
/^  Test: / {
    flush()
    line = substr($0, 9)
    dots = index(line, " ...")
    if (dots == 0) { test = trim(line); rest = "" } else { test = trim(substr(line, 1, dots - 1)); rest = substr(line, dots + 4) }
    open = 1; skipped = 0; message = ""; status = ""; skipmsg = ""
    if (rest ~ /^passed/) status = "PASS"
    else if (rest ~ /^FAILED/) status = "FAIL"
    else {
        if (rest ~ /\[SKIPPED\]/) { skipped = 1; skipmsg = trim(rest) }
        if (rest ~ /\[FAILED\]/) message = trim(rest)
    }
    next
}
/^Run Summary:/ { flush(); summary = 1; next }
summary && $1 == "tests" { printf "#summary %s %s %s %s\n", $2, $3, $4, $5; summary = 0; next }
open && status == "" {
    t = trim($0)
    if (t == "passed") { status = "PASS"; next }
    if (t == "FAILED") { status = "FAIL"; next }
    if (t ~ /\[SKIPPED\]/ && !skipped) { skipped = 1; skipmsg = t }
    if (message == "" && t ~ /\[FAILED\]/) message = t
    next
}
open && status == "FAIL" {
    t = trim($0)
    if (message == "" && t != "") message = t
}
END { flush() }
