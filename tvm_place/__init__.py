"""tvm-place: automatic heterogeneous device placement for Apache TVM (Relax)."""
