"""The per-stage progress line the driver prints into the job's log every minute."""

from __future__ import annotations

import time

from fastsam2.progress import ProgressLogger, format_line, report


def test_the_line_gives_done_and_rates_per_stage_in_pipeline_order():
    line = format_line({"write": 3, "track": 4, "propose": 10}, {"track": 1, "propose": 4}, 60.0, 120.0, 40)
    assert line == ("progress: propose 10/40 (6.0/min, 5.0/min overall) | track 4/40 (3.0/min, 2.0/min overall)"
                    " | write 3/40 (3.0/min, 1.5/min overall)")
    assert format_line({}, {}, 60, 60, 7) == "progress: no stage has finished a video yet (0/7)"


def test_stages_report_from_other_processes_and_the_driver_logs_it(ray_local, capsys):
    import ray

    @ray.remote(num_cpus=0)
    def stage_batch(n):
        report("run-progress-test", "track", n)

    with ProgressLogger("run-progress-test", total=5, interval_s=0.5):
        ray.get([stage_batch.remote(2), stage_batch.remote(1)])
        deadline = time.time() + 20
        while "track 3/5" not in capsys.readouterr().err:
            assert time.time() < deadline, "no progress line"
            time.sleep(0.3)


def test_a_run_shorter_than_the_interval_still_logs_its_counts_when_it_ends(ray_local, capsys):
    import ray

    from fastsam2.progress import board_name

    @ray.remote(num_cpus=0)
    def stage_batch(n):
        report("run-progress-final", "track", n)

    with ProgressLogger("run-progress-final", total=4, interval_s=3600):
        ray.get(stage_batch.remote(4))
        board = ray.get_actor(board_name("run-progress-final"))
        deadline = time.time() + 20
        while ray.get(board.snapshot.remote()).get("track") != 4:  # the stage's report is fire-and-forget
            assert time.time() < deadline, "the report never reached the board"
            time.sleep(0.1)
        assert "progress:" not in capsys.readouterr().err  # no interval has passed yet
    assert "progress: track 4/4" in capsys.readouterr().err
