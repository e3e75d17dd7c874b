#!/usr/bin/env python3
"""Turns the text `make bench` printed (stdin) into one JSON document (stdout): every line with `key=value`
fields becomes a row named by the words before its first field, numbers as numbers; a JSON line (the
allocation counts) is kept whole under its `bench` name. Rows keep their order, so a peer's row and alb's row
of one measurement stay side by side, as in the table."""
import datetime
import json
import subprocess
import sys

def value(text):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def fields(line):
    """(name, fields): the words before the first `key=value`, then each field; bare words after a field's
    value extend it to a list (`changes_ms=12 9 14`)."""
    name, result, last = [], {}, None
    for token in line.split():
        key, equals, text = token.partition("=")
        if equals and key:
            last = key
            result[key] = value(text)
        elif last is None:
            name.append(token)
        else:
            previous = result[last]
            result[last] = (previous if isinstance(previous, list) else [previous]) + [value(token)]
    return " ".join(name), result


def main():
    rows, documents, carried = [], {}, {}
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("{"):
            try:
                document = json.loads(line)
                documents[document.get("bench", "document%d" % len(documents))] = document
            except ValueError:
                pass
            continue
        name, found = fields(line)
        if not found:
            continue
        if not name:  # a detail line (the change latencies) belongs to the summary line after it
            carried.update(found)
            continue
        rows.append({"name": name, **found, **carried})
        carried = {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    json.dump({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "commit": commit, "rows": rows, **documents}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
