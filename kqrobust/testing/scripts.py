"""Running a test script in a fresh Python process (for logical-device set-ups)."""

import json
import subprocess
import sys


def run_script_report(script, *args, timeout=600):
    """Runs `python script *args`; returns the JSON object its last output line holds.

    Multi-replica tests configure logical CPU devices, which TF allows only
    before it initialises, so they run in a process of their own.

    Raises:
        AssertionError: the script failed; the message holds its stderr tail.
    """
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
