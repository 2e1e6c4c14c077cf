"""The benchmark scripts run (tiny sizes, CPU); their figures are printed, not asserted."""

from benchmarks.gpu_check import main, synthetic_windows


def test_synthetic_windows_shape_and_dtype():
    x = synthetic_windows(10, 24)
    assert x.shape == (10, 24, 4)
    assert x.dtype.name == "float32"


def test_gpu_check_runs_on_cpu(capsys):
    main(["--markets", "300", "--months", "12", "--steps", "3", "--batch", "64", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "training          3 steps x 64 windows" in out
    assert "encoding          300 windows" in out
    assert "peak GPU memory   n/a (CPU)" in out
