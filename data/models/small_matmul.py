"""A small TVMScript model file (matmul, relu, add) for the command line's tests and
scripts/bad_inputs.py: `tvm-place place data/models/small_matmul.py`."""

from tvm.script import ir as I, relax as R


@I.ir_module
class Module:
    @R.function
    def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 8), "float32")):
        with R.dataflow():
            y = R.matmul(x, w)
            z = R.nn.relu(y)
            out = R.add(z, y)
            R.output(out)
        return out
