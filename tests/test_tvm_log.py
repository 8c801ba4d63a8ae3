"""TVM's own log lines stay out of the user's output unless asked for (tvm_place.tvm_log)."""

import os

import pytest

from tvm_place import tvm_log

TVM_LINE = b"[06:40:35] /project/src/runtime/vm/executable.cc:276: Warning: Scope Saving:\n"


def test_tvm_log_lines_are_dropped_and_other_output_kept(capfd, monkeypatch):
    monkeypatch.delenv("TVM_LOG_DEBUG", raising=False)
    with tvm_log.tvm_quiet():
        os.write(2, TVM_LINE * 3)
        os.write(2, b"tvm-place: warning: something the user must see\n")
        with tvm_log.tvm_quiet():  # nested: one redirection
            os.write(2, TVM_LINE)
    err = capfd.readouterr().err
    assert "Scope Saving" not in err
    assert "something the user must see" in err


def test_everything_is_written_back_when_an_error_escapes(capfd, monkeypatch):
    monkeypatch.delenv("TVM_LOG_DEBUG", raising=False)
    with pytest.raises(RuntimeError):
        with tvm_log.tvm_quiet():
            os.write(2, TVM_LINE)
            raise RuntimeError("the build failed")
    assert "Scope Saving" in capfd.readouterr().err


@pytest.mark.parametrize("how", ["env", "show"])
def test_debug_lets_tvm_log_lines_through(capfd, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("TVM_LOG_DEBUG", "1")
    else:
        monkeypatch.delenv("TVM_LOG_DEBUG", raising=False)
        monkeypatch.setattr(tvm_log, "_shown", False)  # restored after the test
        tvm_log.show()
    with tvm_log.tvm_quiet():
        os.write(2, TVM_LINE)
    assert "Scope Saving" in capfd.readouterr().err
