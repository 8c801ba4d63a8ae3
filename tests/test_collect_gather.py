"""CollectOpGraph on gathers from constants (embedding lookups): the table counts whole in the
operator's memory (`param_bytes`) but only the gathered rows in its bytes accessed per call."""

import numpy as np
import tvm
from tvm import relax, te

from tvm_place import models
from tvm_place.passes import collect_op_graph, prepare_pipeline
from tvm_place.passes.collect import gathered_elements


def embedding_module(rows: int, dim: int, batch: int) -> tvm.IRModule:
    """ids (batch,) int64 -> take(table (rows, dim), ids) -> matmul with a (dim, dim) weight."""
    bb = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType((batch,), "int64"))
    table = relax.const(np.ones((rows, dim), "float32"))
    weight = relax.const(np.ones((dim, dim), "float32"))
    with bb.function("main", [ids]):
        with bb.dataflow():
            rows_ = bb.emit(relax.op.take(table, ids, axis=0))
            out = bb.emit_output(relax.op.matmul(rows_, weight))
        bb.emit_func_output(out)
    return bb.get()


def test_embedding_lookup_accesses_the_gathered_rows_not_the_table():
    rows, dim, batch = 100_000, 16, 4
    graph = collect_op_graph(prepare_pipeline()(embedding_module(rows, dim, batch))).graph
    take = next(n for n in graph.nodes if "take" in n.kind)
    table_bytes = rows * dim * 4
    assert take.param_bytes == table_bytes  # the table lives on the operator's device
    # ids read, rows gathered, output written; the old count charged the whole table (6.4 MB).
    assert take.bytes_accessed == batch * 8 + batch * dim * 4 + batch * dim * 4
    matmul = next(n for n in graph.nodes if "matmul" in n.kind)
    # A weight read directly is still read whole.
    assert matmul.param_bytes == dim * dim * 4
    assert matmul.bytes_accessed == (batch * dim + dim * dim + batch * dim) * 4


def test_gather_counts_are_capped_at_the_table():
    # More lookups than table elements: at most the whole table is read.
    rows, dim, batch = 3, 2, 64
    graph = collect_op_graph(prepare_pipeline()(embedding_module(rows, dim, batch))).graph
    take = next(n for n in graph.nodes if "take" in n.kind)
    assert take.param_bytes == rows * dim * 4
    assert take.bytes_accessed == batch * 8 + rows * dim * 4 + batch * dim * 4


def test_gathered_elements_of_prim_funcs():
    table = te.placeholder((10, 4), name="table")
    ids = te.placeholder((3,), name="ids", dtype="int64")
    lookup = te.compute((3, 4), lambda i, j: table[ids[i], j] * 2.0, name="lookup")
    assert gathered_elements(te.create_prim_func([table, ids, lookup]), 2) == {0: 12}
    # A table also read directly is read whole: not reported.
    mixed = te.compute((3, 4), lambda i, j: table[ids[i], j] + table[0, j], name="mixed")
    assert gathered_elements(te.create_prim_func([table, ids, mixed]), 2) == {}
    # An embedding bag (sum of 5 rows per sample) gathers inside a reduction.
    bag_ids = te.placeholder((3, 5), name="bag_ids", dtype="int64")
    k = te.reduce_axis((0, 5), name="k")
    bag = te.compute((3, 4), lambda i, j: te.sum(table[bag_ids[i, k], j], axis=k), name="bag")
    assert gathered_elements(te.create_prim_func([table, bag_ids, bag]), 2) == {0: 3 * 5 * 4}
    # Indices that are data (a constant index list into a computed tensor): the indices are read
    # directly, the gathered tensor is not a constant of interest but is still reported.
    data = te.placeholder((3, 25), name="data")
    picks = te.placeholder((10,), name="picks", dtype="int64")
    picked = te.compute((3, 10), lambda i, j: data[i, picks[j]], name="picked")
    assert gathered_elements(te.create_prim_func([data, picks, picked]), 2) == {0: 30}


def test_dlrm_lookups_cost_their_rows_not_their_tables():
    tables = (50_000, 7, 20_000)
    model = models.get("dlrm", batch=2, num_dense=5, table_sizes=tables, embedding_dim=4,
                       bottom_mlp=(16,), top_mlp=(8,))
    graph = collect_op_graph(prepare_pipeline()(model.mod)).graph
    lookups = [n for n in graph.nodes if n.kind.startswith("take") and n.param_bytes > 0]
    by_table = sorted(n.param_bytes for n in lookups if n.param_bytes >= 7 * 4 * 4)
    assert by_table == [7 * 4 * 4, 20_000 * 4 * 4, 50_000 * 4 * 4]
    for node in lookups:
        if node.param_bytes in (20_000 * 16, 50_000 * 16):
            # 2 ids (int64), 2 rows of 4 floats gathered and written.
            assert node.bytes_accessed == 2 * 8 + 2 * 4 * 4 + 2 * 4 * 4
