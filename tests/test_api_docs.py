"""The curl examples of docs/api.md, run against a live server in document order, answer
the statuses their `# expect` line names, so the documentation cannot drift."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from bench.processes import wait_for_fold

from tests.servers import served

DOCS = Path(__file__).parent.parent / "docs" / "api.md"
BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def test_every_curl_example_answers_as_documented(tmp_path: Path) -> None:
    blocks = [b for b in BLOCK.findall(DOCS.read_text()) if "curl" in b]
    assert len(blocks) >= 7
    home = tmp_path / "home"
    home.mkdir()
    # Each curl prints only its status, one a line; the commands stay as documented.
    (home / ".curlrc").write_text('silent\noutput = "/dev/null"\nwrite-out = "%{http_code}\\n"\n')
    with served(tmp_path) as server:
        (tmp_path / "batch.json").write_text(
            json.dumps({"events": [{"action": "purchase", "email": "georgi@releva.ai"}]})
        )
        for block in blocks:
            expected = re.search(r"^# expect ((?:\d{3} ?)+)$", block, re.MULTILINE)
            assert expected, f"a curl example without '# expect': {block[:80]}"
            command = block.replace("efsk_...", server.secret).replace(
                "http://127.0.0.1:8000", server.url
            )
            wait_for_fold(server.url)
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
            )
            assert result.stdout.split() == expected.group(1).split(), (block, result.stderr)
