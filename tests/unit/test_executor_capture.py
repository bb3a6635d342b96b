"""The executor lane's output capture: set up once per process, each attempt's output stored as its own.

It redirects the process's file descriptors 1 and 2 for good, so it runs in a child process here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent('''
    import json, os, subprocess, sys, time
    from mlhub.jobs import executor

    executor.FLUSH_INTERVAL_S = 0.05
    capture = executor.process_capture()
    stored = {}
    results = {}
    for job in ("a", "b", "c"):
        sink = lambda chunks, job=job: stored.setdefault(job, []).extend(chunks)
        attempt = capture.attempt(sink)
        with attempt:
            print(f"python line of {job}")
            os.write(1, f"fd line of {job}\\n".encode())
            subprocess.run(["echo", f"child line of {job}"], check=True)
            print(f"error of {job}", file=sys.stderr)
            if job == "b":
                time.sleep(0.3)  # long enough for the flusher to store a part while it runs
                print("late line of b", end="")  # no newline: still kept at the end
        results[job] = attempt.take_pending()
    print("between attempts: nobody's")
    sys.stdout.flush()
    time.sleep(0.1)
    out = {job: {"stored": stored.get(job, []), "final": results[job]} for job in results}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
''')


def test_each_attempt_gets_its_own_output_from_python_descriptors_and_children(tmp_path):
    result = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(result)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(result.read_text())
    for job in ("a", "b", "c"):
        chunks = out[job]["stored"] + out[job]["final"]
        stdout = "".join(t for s, _, t in chunks if s == "stdout")
        stderr = "".join(t for s, _, t in chunks if s == "stderr")
        for line in (f"python line of {job}", f"fd line of {job}", f"child line of {job}"):
            assert stdout.count(line) == 1, (job, stdout)
        assert stderr == f"error of {job}\n"
        others = {"a", "b", "c"} - {job}
        assert not any(f"of {o}" in stdout + stderr for o in others)  # nothing of another attempt
        for stream in ("stdout", "stderr"):
            seqs = [n for s, n, _ in chunks if s == stream]
            assert seqs == list(range(1, len(seqs) + 1))  # numbered per stream, in order
    assert out["b"]["stored"] and out["b"]["stored"][0][2].startswith("python line of b")  # flushed while running
    assert "".join(t for _, _, t in out["b"]["final"]).endswith("late line of b")
    # the process's own output still reaches its original descriptors (Ray's log files), attempts' too
    assert "between attempts: nobody's" in proc.stdout and "python line of a" in proc.stdout
    assert "error of c" in proc.stderr
