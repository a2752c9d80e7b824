"""cosearch.jobs: independent command lines, resumable, in-process or as Ray tasks."""
from __future__ import annotations

import sys

import pytest

from cosearch.errors import UserError
from cosearch.jobs import Job, check_jobs, run_jobs


def _writer(root, name: str, text: str) -> Job:
    """A job that appends ``text`` to ``ROOT/NAME.out`` (its done file)."""
    out = root / f"{name}.out"
    code = f"open({str(out)!r}, 'a').write('{text}\\n'); print('wrote {text}')"
    return Job(name, (sys.executable, "-c", code), done=str(out))


def test_jobs_run_once_and_a_rerun_skips_what_is_done(tmp_path):
    jobs = [_writer(tmp_path, "a", "x"), _writer(tmp_path, "b", "y")]
    first = run_jobs(jobs, tmp_path, parallel=1, progress=False)
    assert [r.ok for r in first] == [True, True] and [r.skipped for r in first] == [False, False]
    again = run_jobs(jobs, tmp_path, parallel=1, progress=False)
    assert [r.skipped for r in again] == [True, True]
    assert (tmp_path / "a.out").read_text() == "x\n"  # not run a second time
    assert "wrote x" in (tmp_path / "a" / "log.txt").read_text()


def test_a_failed_job_reports_its_code_and_log_tail_and_runs_again(tmp_path):
    bad = Job("bad", (sys.executable, "-c", "print('boom'); import sys; sys.exit(3)"), done="never")
    (r,) = run_jobs([bad], tmp_path, parallel=1, progress=False)
    assert r.returncode == 3 and not r.ok and "boom" in r.tail
    (r2,) = run_jobs([bad], tmp_path, parallel=1, progress=False)
    assert not r2.skipped  # a failed job is not done


def test_exit_zero_without_the_done_file_is_a_failure(tmp_path):
    j = Job("lazy", (sys.executable, "-c", "pass"), done="result.json")
    (r,) = run_jobs([j], tmp_path, parallel=1, progress=False)
    assert not r.ok and "result.json" in r.tail


@pytest.mark.parametrize("jobs, match", [
    ([Job("../x", ("true",), "d")], "job name"),
    ([Job("a", ("true",), "d"), Job("a", ("true",), "d")], "used twice"),
    ([Job("a", (), "d")], "empty command"),
    ([Job("a", ("true",), "d", gpu=2.0)], "gpu share"),
])
def test_bad_jobs_are_refused_before_anything_runs(jobs, match, tmp_path):
    with pytest.raises(UserError, match=match):
        check_jobs(jobs)
    with pytest.raises(UserError, match=match):
        run_jobs(jobs, tmp_path / "never", parallel=1, progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_runs_the_jobs_as_tasks_in_parallel(tmp_path):
    # each job waits until the other one has started: only parallel tasks can both finish
    code = ("import os, time, pathlib; r = pathlib.Path({root!r}); (r / '{me}.started').touch(); t = time.time()\n"
            "while not (r / '{other}.started').exists():\n"
            "    time.sleep(0.05)\n"
            "    assert time.time() - t < 60, 'ran alone'\n"
            "(r / '{me}.done').touch()")
    jobs = [Job(me, (sys.executable, "-c", code.format(root=str(tmp_path), me=me, other=other)), done=f"../{me}.done")
            for me, other in (("p", "q"), ("q", "p"))]
    res = run_jobs(jobs, tmp_path, parallel=2, progress=False)
    assert [r.ok for r in res] == [True, True], [r.tail for r in res]


def test_a_job_runs_after_the_ones_it_names_and_not_when_one_failed(tmp_path):
    first = _writer(tmp_path, "first", "1")
    # reads first.out: fails unless `first` has already run
    reader = Job("reader", (sys.executable, "-c", f"open({str(tmp_path / 'r.out')!r}, 'w').write("
                            f"open({str(tmp_path / 'first.out')!r}).read())"), done=str(tmp_path / "r.out"),
                 after=("first",))
    bad = Job("bad", (sys.executable, "-c", "raise SystemExit(1)"), done="never")
    blocked = _writer(tmp_path, "blocked", "x")
    blocked = Job(blocked.name, blocked.argv, blocked.done, after=("bad",))
    res = run_jobs([first, reader, bad, blocked], tmp_path, parallel=1, progress=False)
    assert [r.returncode for r in res] == [0, 0, 1, -1]
    assert (tmp_path / "r.out").read_text() == "1\n"
    assert "bad failed" in res[3].tail and not (tmp_path / "blocked.out").exists()


def test_after_must_name_an_earlier_job(tmp_path):
    with pytest.raises(UserError, match="not an earlier job"):
        check_jobs([Job("a", ("true",), "d", after=("a",))])
    with pytest.raises(UserError, match="not an earlier job"):
        check_jobs([Job("a", ("true",), "d", after=("b",)), Job("b", ("true",), "d")])


@pytest.mark.ray
@pytest.mark.slow
def test_ray_honours_after_and_skips_dependants_of_a_failure(tmp_path):
    slow_first = Job("first", (sys.executable, "-c", f"import time; time.sleep(2); "
                                                     f"open({str(tmp_path / 'first.out')!r}, 'w').write('1')"),
                     done=str(tmp_path / "first.out"))
    reader = Job("reader", (sys.executable, "-c", f"open({str(tmp_path / 'r.out')!r}, 'w').write("
                            f"open({str(tmp_path / 'first.out')!r}).read())"), done=str(tmp_path / "r.out"),
                 after=("first",))
    bad = Job("bad", (sys.executable, "-c", "raise SystemExit(1)"), done="never")
    blocked = Job("blocked", (sys.executable, "-c", "pass"), done="never", after=("bad",))
    res = run_jobs([slow_first, reader, bad, blocked], tmp_path, parallel=2, progress=False)
    assert [r.returncode for r in res] == [0, 0, 1, -1], [r.tail for r in res]


@pytest.mark.ray
def test_a_bad_ray_address_is_one_line(tmp_path):
    jobs = [_writer(tmp_path, n, n) for n in ("a", "b")]
    with pytest.raises(UserError, match="--address no-such-head: no Ray cluster to join there"):
        run_jobs(jobs, tmp_path, parallel=2, progress=False, address="no-such-head")
