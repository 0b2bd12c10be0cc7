"""`ember tune`: one operator or a model's kernels, a log that resumes, a summary table, a
plot, and Ctrl-C that leaves a valid log. Measurement is faked except in the last test."""

import math

import pytest
from autotune_models import two_conv_model

from ember.__main__ import main
from ember.autotune import cli, measure, tuner
from ember.autotune.measure import MeasureResult
from ember.autotune.records import load_records
from ember.errors import EmberError

OP = ["tune", "--op", "matmul", "--shape", "16x64", "--shape", "64x128", "--tuner", "random"]


class FakeMeasurer:
    """Synthetic costs from the config index; index % 11 == 3 fails as a runtime error;
    raises KeyboardInterrupt on call number `interrupt_at`."""

    def __init__(self, interrupt_at=None):
        self.calls = 0
        self.measured = []
        self.interrupt_at = interrupt_at
        self.closed = False

    def measure(self, task, configs):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.measured += [c.index for c in configs]
        return [MeasureResult((), measure.ErrorClass.RUNTIME, message="SIGSEGV")
                if c.index % 11 == 3 else
                MeasureResult((1e-5 * (1 + (c.index * 7919) % 97 / 50),), None, timestamp=1.0)
                for c in configs]

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    measurer = FakeMeasurer()
    monkeypatch.setattr(measure, "make_measurer", lambda *args, **kwargs: measurer)
    return measurer


def test_tune_one_operator_writes_records_and_a_summary(fake, tmp_path, capsys):
    log = tmp_path / "mm.jsonl"
    assert main([*OP, "--trials", "20", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    records = load_records(log)
    assert len(fake.measured) == len(records) == len(set(fake.measured))
    assert 20 <= len(records) <= 21  # the trials, and the default config if not among them
    assert fake.closed
    assert "1 task(s) to tune" in out and "dense_packed" in out
    row = next(line for line in out.splitlines() if line.startswith("dense_packed"))
    trials, errors = row.split()[2:4]
    assert int(trials) == len(records)
    failed = sum(r.error == "runtime" for r in records)
    assert errors == (f"runtime:{failed}" if failed else "-")
    assert "records=" in out


def test_running_again_resumes_from_the_log(fake, tmp_path, capsys):
    log = tmp_path / "mm.jsonl"
    main([*OP, "--trials", "10", "--log", str(log)])
    first = list(fake.measured)
    main([*OP, "--trials", "10", "--log", str(log)])
    assert fake.measured == first  # nothing measured twice, nothing new needed
    main([*OP, "--trials", "16", "--log", str(log)])
    assert len(fake.measured) == len(set(fake.measured)) >= 16
    assert len(load_records(log)) == len(fake.measured)


def test_a_new_shape_learns_from_the_logs_other_shapes_unless_told_not_to(fake, tmp_path,
                                                                          monkeypatch):
    log = tmp_path / "mm.jsonl"
    main([*OP, "--trials", "10", "--log", str(log)])
    taught = []
    learn_from = tuner.XGBTuner.learn_from
    monkeypatch.setattr(tuner.XGBTuner, "learn_from",
                        lambda self, records: (taught.append(len(records)),
                                               learn_from(self, records)))
    other = ["tune", "--op", "matmul", "--shape", "16x32", "--shape", "32x64"]
    main([*other, "--trials", "10", "--log", str(log), "--no-transfer"])
    assert taught == []
    main([*other, "--trials", "20", "--log", str(log)])
    assert taught and taught[0] >= 10   # the first shape's records


def test_ctrl_c_leaves_a_valid_log_and_prints_the_summary(monkeypatch, tmp_path, capsys):
    measurer = FakeMeasurer(interrupt_at=2)
    monkeypatch.setattr(measure, "make_measurer", lambda *args, **kwargs: measurer)
    log = tmp_path / "mm.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main([*OP, "--trials", "40", "--log", str(log)])
    assert exit_info.value.code == 130
    out = capsys.readouterr().out
    assert "interrupted" in out and "resume" in out and "dense_packed" in out
    assert len(load_records(log)) == len(measurer.measured) > 0
    assert measurer.closed


def test_tune_a_model_splits_trials_over_its_tasks(fake, tmp_path, capsys):
    import onnx

    model = tmp_path / "two.onnx"
    onnx.save(two_conv_model(), model)
    log = tmp_path / "model.jsonl"
    plot = ["--plot", str(tmp_path / "curve.png")] if _has_matplotlib() else []
    assert main(["tune", str(model), "--trials", "12", "--tuner", "random",
                 "--log", str(log), *plot]) == 0
    out = capsys.readouterr().out
    keys = {r.task for r in load_records(log)}
    assert len(keys) >= 2 and any(k.startswith("fused_conv2d_nchwc") for k in keys)
    assert "fused_conv2d_nchwc" in out and "speed-up" in out
    if plot:
        assert (tmp_path / "curve.png").stat().st_size > 1000
    assert main(["compile", str(model), "--records", str(log)]) == 0
    assert "tuning records applied to" in capsys.readouterr().out


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_summary_reads_default_and_best_from_the_records():
    from ember.autotune.records import Record
    from ember.autotune.task import op_task

    task = op_task("matmul", [(16, 64), (64, 128)])
    default = task.space().default
    other = next(c for c in task.space() if c.index != default.index)
    records = [Record.of(task, default, MeasureResult((4e-6,), None)),
               Record.of(task, other, MeasureResult((2e-6,), None)),
               Record.of(task, other, MeasureResult((), measure.ErrorClass.WRONG_ANSWER))]
    [row] = cli.summarize([task], records)
    assert row.trials == 3 and row.errors == {"wrong_answer": 1}
    assert row.speedup == pytest.approx(2.0)
    assert row.best_gflops == pytest.approx(task.flops / 2e-6 / 1e9)
    table = cli.format_summary([row])
    assert "wrong_answer:1" in table and "2.00x" in table
    [empty] = cli.summarize([task], [])
    assert math.isnan(empty.speedup) and "-" in cli.format_summary([empty])


@pytest.mark.parametrize("text, dims", [("1x64x56x56", (1, 64, 56, 56)), ("3,4", (3, 4)),
                                        ("7", (7,))])
def test_parse_dims(text, dims):
    assert cli.parse_dims(text, "--shape") == dims


def test_parse_attrs_and_errors():
    assert cli.parse_attrs(["pads=1,1,1,1", "group=32", "alpha=0.5", "auto_pad=SAME_UPPER"]) == {
        "pads": [1, 1, 1, 1], "group": 32, "alpha": 0.5, "auto_pad": "SAME_UPPER"}
    assert cli.parse_input_shapes(["x=1x3x8x8"]) == {"x": (1, 3, 8, 8)}
    for bad in (lambda: cli.parse_dims("1xAx3", "--shape"),
                lambda: cli.parse_attrs(["pads"]),
                lambda: cli.parse_input_shapes(["1x3"])):
        with pytest.raises(EmberError, match="must look like"):
            bad()


@pytest.mark.parametrize("argv, message", [
    (["tune", "--log", "x.jsonl"], "needs a model"),
    (["tune", "m.onnx", "--op", "conv2d", "--log", "x.jsonl"], "not both"),
    (["tune", "m.onnx", "--shape", "1x2", "--log", "x.jsonl"], "go with --op"),
    ([*OP, "--trials", "0", "--log", "x.jsonl"], "at least 1"),
])
def test_bad_requests_are_errors_not_tracebacks(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(EmberError, match=r"pip install ember\[plot\]"):
        cli.plot_curves([], [], tmp_path / "x.png")


def test_end_to_end_with_real_measurement(tmp_path, capsys):
    log = tmp_path / "real.jsonl"
    assert main(["tune", "--op", "matmul", "--shape", "8x32", "--shape", "32x64",
                 "--trials", "4", "--tuner", "xgb", "--log", str(log)]) == 0
    records = load_records(log)
    assert 4 <= len(records) <= 5
    assert all(r.ok for r in records), [r.message for r in records if not r.ok]
    assert "speed-up" in capsys.readouterr().out
