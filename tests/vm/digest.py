#!/usr/bin/env python3
"""Prints the guest's failed and erroring tests from its junit.xml, each with the end of its
report: run.sh prints this last, so that a CI log that keeps only its head and tail still names
them."""
import sys
import xml.etree.ElementTree as ET


def main(path, lines=25):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"digest: no junit report ({e})")
        return 0
    bad = 0
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            for node in case.findall(kind):
                bad += 1
                name = f"{case.get('classname')}::{case.get('name')}"
                print(f"===== {kind.upper()}: {name} ({case.get('time')} s)")
                text = (node.get("message") or "") + "\n" + (node.text or "")
                tail = [line for line in text.splitlines() if line.strip()][-lines:]
                print("\n".join(tail))
    print(f"digest: {bad} failed or erroring test(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
