#!/usr/bin/python3
"""The last line of `make check`: how many tests passed, failed and were skipped, and for
every skipped test why (its GTEST_SKIP message), so a feature that went missing never
hides behind a green suite.

    check_summary.py BUILD/Testing/Temporary/LastTest.log"""
import re
import sys


def main():
    text = open(sys.argv[1], errors="replace").read()
    blocks = re.split(r"\n-{58}\n\n", text)
    passed, failed, skipped = 0, [], {}
    for b in blocks:
        m = re.search(r"^\d+/\d+ Test: (\S+)", b, re.M)
        if not m:
            continue
        name = m.group(1)
        if "Test Pass Reason:\nSkip regular expression found" in b:
            why = re.search(r": Skipped\n(.*)\n", b)
            skipped.setdefault(why.group(1).strip() if why else "no reason given", []).append(name)
        elif re.search(r"^Test Passed\.", b, re.M) or "Test Pass Reason" in b:
            passed += 1
        elif re.search(r"^Test Failed\.|^Test Timeout", b, re.M):
            failed.append(name)
        elif '"' + name + '" end time' in b:
            passed += 1
    n_skip = sum(len(v) for v in skipped.values())
    print(f"make check: {passed} passed, {len(failed)} failed, {n_skip} skipped")
    for name in failed:
        print(f"  failed: {name}")
    for why, names in skipped.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        print(f"  skipped ({len(names)}): {why}: {shown}")


main()
