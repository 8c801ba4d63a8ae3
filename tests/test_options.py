"""PlaceOptions: the one options object every entry point takes (tvm_place.options)."""

import numpy as np
import pytest

import tvm_place
from tvm_place import PlaceOptions
from tvm_place.errors import TvmPlaceError, UnknownMethodError


def test_keywords_override_an_options_object_and_typos_get_a_suggestion():
    base = PlaceOptions(objective="throughput", method="greedy")
    merged = PlaceOptions.of(base, method="dp", time_limit=5)
    assert (merged.objective, merged.method, merged.time_limit) == ("throughput", "dp", 5)
    assert base.method == "greedy"  # frozen: the caller's object is not changed
    with pytest.raises(TvmPlaceError, match="did you mean 'objective'"):
        PlaceOptions.of(objectve="latency")
    with pytest.raises(UnknownMethodError, match="unknown objective"):
        PlaceOptions(objective="speed")
    with pytest.raises(TvmPlaceError, match="time_limit"):
        PlaceOptions(time_limit=-1)
    with pytest.raises(TvmPlaceError, match="by keyword"):
        PlaceOptions.of("throughput")


def two_matmuls():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((16, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, x))
            out = bb.emit_output(relax.op.matmul(y, x))
        bb.emit_func_output(out)
    return bb.get()


def test_every_entry_point_takes_the_options_object_or_keywords():
    mod = two_matmuls()
    options = PlaceOptions(objective="throughput", method="greedy", time_limit=5)
    by_object = tvm_place.place(mod, ["llvm", "llvm"], options)
    by_keywords = tvm_place.place(mod, ["llvm", "llvm"], objective="throughput", method="greedy",
                                  time_limit=5)
    assert np.array_equal(by_object.placement.device_of, by_keywords.placement.device_of)
    assert by_object.placement.method == "greedy"
    with pytest.raises(TvmPlaceError, match="did you mean 'method'"):
        tvm_place.compile(mod, ["llvm"], methd="greedy")
