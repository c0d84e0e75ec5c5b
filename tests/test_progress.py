"""The progress display of long commands (rich): a bar per stage, the count and the time left,
on standard error only, and nothing at all when standard error is not a terminal."""

import io

from rich.console import Console
from typer.testing import CliRunner

from rag.cli import StageBars, app


def _bars(clock) -> tuple[StageBars, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    return StageBars(console=console, clock=clock), out


def test_each_stage_has_a_bar_with_its_count_and_time_left():
    now = [100.0]
    bars, out = _bars(lambda: now[0])
    with bars:
        bars("read", 0, 100)
        for done in (10, 20):  # 10 every 5 s: 80 left -> 40 s
            now[0] += 5.0
            bars("read", done, 100)
        bars.bars.refresh()
        assert "20/100" in out.getvalue() and "0:00:40" in out.getvalue()
        now[0] += 40.0
        bars("read", 100, 100)
        bars("embed", 5, 10)
        bars("empty", 0, 0)  # nothing to count: no bar
    last = out.getvalue().rsplit("read", 1)[1]  # the final drawing, as stop() leaves it
    assert "100/100" in last and "embed" in last and "5/10" in last
    assert "empty" not in out.getvalue()


def test_a_done_count_past_the_total_is_shown_as_the_total():
    bars, out = _bars(lambda: 0.0)
    with bars:
        bars("read", 12, 10)
    assert "10/10" in out.getvalue() and "12/10" not in out.getvalue()


def test_no_progress_when_standard_error_is_not_a_terminal(tmp_path):
    (tmp_path / "a.txt").write_text("The harbour opened a new pier with 40 berths in May.")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "a.txt"), "--index",
                                      str(tmp_path / "idx"), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # CliRunner's standard error is not a terminal


def test_the_bars_draw_on_standard_error():
    assert StageBars().bars.console.stderr
