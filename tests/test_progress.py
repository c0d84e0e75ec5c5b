"""The progress line of long commands: a bar, the count and the time left."""

import io

from rag.cli import Progress, format_eta


def test_format_eta():
    assert format_eta(None) == "ETA --:--"
    assert format_eta(float("nan")) == "ETA --:--"
    assert format_eta(0) == "ETA 0:00"
    assert format_eta(65.4) == "ETA 1:05"
    assert format_eta(3 * 3600 + 7 * 60 + 9) == "ETA 3:07:09"


def test_eta_from_the_rate_of_the_current_stage():
    now = [100.0]
    out = io.StringIO()
    p = Progress(stream=out, clock=lambda: now[0])
    p("read", 0, 100)
    assert "ETA --:--" in out.getvalue()
    now[0] += 10.0
    p("read", 20, 100)  # 2 per second: 80 left -> 40 s
    assert out.getvalue().rstrip().endswith("20/100 ETA 0:40")
    now[0] += 40.0
    p("read", 100, 100)
    assert out.getvalue().endswith("done   \n")
    p("embed", 5, 10)  # a new stage restarts the clock: no rate yet
    assert out.getvalue().rstrip().endswith("5/10 ETA --:--")
