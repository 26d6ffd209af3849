import io

from spm_gen.utils import progress as progress_module


def test_bars_refresh_at_most_every_30_s_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress_module.sys, "stderr", io.StringIO())
    assert progress_module.bar_settings() == {"mininterval": 30.0, "maxinterval": 30.0}
    out = io.StringIO()
    for _ in progress_module.progress(range(1000), "steps", file=out):
        pass
    assert out.getvalue().count("steps") <= 3  # start, end and at most one refresh: not a line per step

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(progress_module.sys, "stderr", Terminal())
    assert progress_module.bar_settings() == {}
