"""The report every offline check in ops/scripts prints: one line per check ("ok   - ...",
"FAIL - ...: detail", "skip - ...: why") and the counts for its summary line.

Imported by check_chart.py and check_terraform.py (both run with this directory first on
sys.path, as Python puts a script's own directory there). Standard library only.
"""


class Report:
    def __init__(self, detail_tail=None):
        """`detail_tail`: print at most the last this many characters of a failure's detail
        (a tool's whole log can be long); None prints it all."""
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.detail_tail = detail_tail

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   - {what}")
        else:
            self.failed += 1
            if detail and self.detail_tail is not None:
                detail = str(detail)[-self.detail_tail:]
            print(f"FAIL - {what}" + (f": {detail}" if detail else ""))
        return ok

    def skip(self, what, why):
        self.skipped += 1
        print(f"skip - {what}: {why}")
