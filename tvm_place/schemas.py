"""The file formats tvm-place reads, one JSON Schema each, and the one reader that checks them.

Every file a user or another run hands tvm-place is checked here, at the boundary, before any of
it is used: problem files, plans and placements, device files and device profiles, export
manifests and cost caches. :func:`read_file` reads a file (JSON, or TOML by the ``.toml``
suffix) and turns every way that can fail (missing, a directory, unreadable, binary, not JSON,
nested too deeply) into one clear error; :func:`validate` checks data against its format's schema
and turns the first violation into an error naming the file, the field, what is wrong and the fix.
Unknown keys are errors ("did you mean ..."), booleans are not numbers, and a number is finite.

What a schema cannot say (an index naming a node that exists, one cost per device) the loaders
check themselves, with :func:`field_error` for the message.
"""

from __future__ import annotations

import difflib
import json
import math
import reprlib
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from .errors import TvmPlaceError

FORMAT_DOC = "docs/problem-format.md"

# -- building blocks --------------------------------------------------------------------------------

NUMBER = {"type": "number"}  # finite (see _type_checker), never a boolean
NON_NEGATIVE = {"type": "number", "minimum": 0}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
INDEX = {"type": "integer", "minimum": 0}
STRING = {"type": "string"}
OPTIONAL_STRING = {"type": ["string", "null"]}
#: A cost in seconds; null: the operator cannot run there (an unlimited capacity for a device).
COST_OR_NULL = {"type": ["number", "null"], "minimum": 0}


def _object(properties: dict, required: tuple = (), **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False, **extra}


# -- problem files (tvm-place-problem, docs/problem-format.md) --------------------------------------

PROBLEM_DEVICE = _object({
    "name": STRING,
    "kind": STRING,
    "memory_capacity": COST_OR_NULL,
    "target": {"type": ["string", "object", "null"]},
    "profile": OPTIONAL_STRING,
    "call_overhead": NON_NEGATIVE,
}, required=("name",))

PROBLEM_NODE = _object({
    "name": STRING,
    "kind": STRING,
    "compute_time": {"type": "array", "items": COST_OR_NULL},
    "transfer_time": {"type": "array", "items": NON_NEGATIVE},
    "memory": NON_NEGATIVE,
    "flops": NON_NEGATIVE,
    "bytes_accessed": NON_NEGATIVE,
    "output_bytes": NON_NEGATIVE,
    "param_bytes": NON_NEGATIVE,
    "is_backward": {"type": "boolean"},
}, required=("name", "compute_time", "transfer_time"))

PROBLEM = _object({
    "format": {"const": "tvm-place-problem"},
    "version": {"const": 1},
    "name": STRING,
    "devices": {"type": "array", "minItems": 1, "items": PROBLEM_DEVICE},
    "nodes": {"type": "array", "minItems": 1, "items": PROBLEM_NODE},
    "edges": {"type": "array", "items": {"type": "array", "items": INDEX, "minItems": 2, "maxItems": 2}},
    "pins": {"type": ["object", "null"], "propertyNames": {"pattern": "^[0-9]+$"},
             "additionalProperties": {"type": "array", "items": INDEX, "minItems": 1}},
    "colour_classes": {"type": ["array", "null"], "items": {"type": "array", "items": INDEX}},
}, required=("format", "version", "devices", "nodes", "edges"))

# -- placements (solver results: solve --output, inside manifests) and plans -----------------------

_PLACEMENT_FIELDS = {
    "objective": {"enum": ["latency", "throughput"]},
    "value": NON_NEGATIVE,
    "lower_bound": NON_NEGATIVE,
    "gap": {},  # recomputed from value and lower bound when read (it may be Infinity)
    "method": STRING,
    "order": {"type": ["array", "null"], "items": INDEX},
    "replicas": {"type": "array", "items": {"type": "array", "items": INDEX, "minItems": 2}},
    "stats": {"type": "object"},
}

PLACEMENT = _object({
    "format": {"const": "tvm-place-placement"},
    "version": {"const": 1},
    **_PLACEMENT_FIELDS,
    "device_of": {"type": "array", "items": INDEX},
    "operators": {"type": ["array", "null"], "items": STRING},
    "device_names": {"type": ["array", "null"], "items": STRING},
}, required=("format", "version", "objective", "value", "lower_bound", "method", "device_of"))

#: The plan: a placement of a model with what placed it (``tvm-place place --save-plan``, golden
#: plans of ``tvm-place check`` and ``tvm_place.testing``); ``--plan`` applies it.
PLAN = _object({
    "format": {"const": "tvm-place-plan"},
    "version": {"const": 1},
    **_PLACEMENT_FIELDS,
    "model": {"type": ["object", "null"], "properties": {
        "name": STRING, "sizes": {"type": "object"}, "batch": {"type": "integer", "minimum": 1},
        "seed": {"type": "integer"}}, "required": ["name"], "additionalProperties": False},
    "targets": {"type": "array", "minItems": 1, "items": {"type": ["string", "object"]}},
    "options": _object({
        "objective": {"enum": ["latency", "throughput"]},
        "method": STRING,
        "time_limit": POSITIVE,
        "cost_model": {"oneOf": [STRING, _object({"snapshot": STRING}, required=("snapshot",))]},
        "profiles": {"type": ["array", "null"], "items": {"type": ["string", "object", "null"]}},
        "pins": {"type": ["object", "null"], "additionalProperties": STRING},
    }),
    "devices": {"type": "array", "minItems": 1, "items": STRING},
    "ops": {"type": "array", "items": {"type": "array", "prefixItems": [STRING, STRING],
                                       "minItems": 2, "maxItems": 2}},
    "tolerance": NON_NEGATIVE,
    # per device, the operators each cost source priced (plans with costs other than analytical)
    "cost_sources": {"type": "object", "additionalProperties": {
        "type": "object", "additionalProperties": INDEX}},
}, required=("format", "version", "targets", "options", "devices", "ops", "objective", "value"))

# -- dnn-partitioning workloads and splits (data/dnn-partitioning/README.md) ------------------------

_FLAG = {"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}]}
DNN_WORKLOAD = _object({
    "maxSizePerFPGA": NON_NEGATIVE,
    "maxFPGAs": INDEX,
    "maxCPUs": INDEX,
    "nodes": {"type": "array", "minItems": 1, "items": _object({
        "id": {"type": "integer"}, "name": {"type": ["string", "integer"]},
        "cpuLatency": NON_NEGATIVE, "fpgaLatency": NON_NEGATIVE, "supportedOnFpga": _FLAG,
        "size": NON_NEGATIVE, "isBackwardNode": _FLAG, "colorClass": {"type": "integer"},
        "layerId": {"type": "integer"},
    }, required=("id", "cpuLatency", "fpgaLatency", "supportedOnFpga", "size"))},
    "edges": {"type": "array", "items": _object({
        "sourceId": {"type": "integer"}, "destId": {"type": "integer"}, "cost": NON_NEGATIVE,
        "size": NON_NEGATIVE,
    }, required=("sourceId", "destId", "cost"))},
}, required=("maxSizePerFPGA", "maxFPGAs", "maxCPUs", "nodes", "edges"))

# loads are recomputed when read (the published splits write -1: not given)
_DNN_PART = _object({"load": NUMBER, "nodes": {"type": "array", "items": {"type": "integer"}}})
DNN_SPLIT = _object({
    "cpus": {"type": ["array", "null"], "items": _DNN_PART},
    "fpgas": {"type": ["array", "null"], "items": _DNN_PART},
    "maxLoad": NUMBER,
    "replicas": {"type": "array", "items": {"type": "array", "items": STRING, "minItems": 2}},
})

# -- device profiles and device files ---------------------------------------------------------------

LINK = _object({
    "bandwidth_gbs": POSITIVE,
    "latency_us": NON_NEGATIVE,
    "description": STRING,
}, required=("bandwidth_gbs", "latency_us"))

#: The operator classes a profile may give figures for (how the analytical model classes an
#: operator: :func:`tvm_place.cost.analytical.operator_class`).
OPERATOR_CLASSES = ("conv", "matmul", "pooling", "reduction", "data_movement", "elementwise")

EFFICIENCY = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}

#: One operator class's figures; each one given replaces the profile's own for that class.
OPERATOR_CLASS = _object({
    "compute_efficiency": EFFICIENCY,
    "memory_efficiency": EFFICIENCY,
    "launch_overhead_us": NON_NEGATIVE,
}, minProperties=1)

#: The fields of a device profile (``cost/profiles/devices.json``, or a device file's table).
PROFILE_PROPERTIES = {
    "kind": {"enum": ["cpu", "gpu"]},
    "peak_gflops": POSITIVE,
    "memory_bandwidth_gbs": POSITIVE,
    "memory_bytes": POSITIVE,
    "compute_efficiency": EFFICIENCY,
    "memory_efficiency": EFFICIENCY,
    "launch_overhead_us": NON_NEGATIVE,
    "link": {"type": ["string", "object"]},  # a link profile's name, or LINK (checked on its own)
    "arch": STRING,
    "description": STRING,
    # optional: per operator class, figures that replace the ones above (a calibration's fit)
    "operator_classes": _object({name: OPERATOR_CLASS for name in OPERATOR_CLASSES}),
}
PROFILE_FIELDS = ("kind", "peak_gflops", "memory_bandwidth_gbs", "memory_bytes",
                  "compute_efficiency", "memory_efficiency", "launch_overhead_us", "link")
PROFILE = _object(PROFILE_PROPERTIES, required=PROFILE_FIELDS)

DEVICE_FILE = _object({
    "devices": {"type": "array", "minItems": 1, "items": _object({
        "target": {"oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "object", "required": ["kind"], "properties": {"kind": STRING}},
        ]},
        # a profile name, or a table of profile fields (checked as a whole profile when used)
        "profile": {"oneOf": [STRING, _object(PROFILE_PROPERTIES)]},
        # profile fields beside the target override the named (or default) profile's
        **PROFILE_PROPERTIES,
    }, required=("target",))},
}, required=("devices",))

# -- export manifests -------------------------------------------------------------------------------

SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
STAGE_PLAN = {
    "type": "object",
    "required": ["inputs", "steps", "outputs", "output_is_tuple"],
    "properties": {
        "inputs": {"type": "array", "items": STRING},
        "steps": {"type": "array", "items": {"oneOf": [
            # a call of function `stage` of executable `module` (the device's library)
            {"type": "object", "required": ["kind", "stage", "device", "module", "args", "outputs"],
             "properties": {"kind": {"const": "call"}, "stage": STRING, "device": INDEX,
                            "module": STRING,
                            "args": {"type": "array", "items": STRING},
                            "outputs": {"type": "array", "items": OPTIONAL_STRING}}},
            {"type": "object", "required": ["kind", "source", "result", "device"],
             "properties": {"kind": {"const": "copy"}, "source": STRING, "result": STRING,
                            "device": INDEX}},
        ]}},
        "outputs": {"type": "array", "items": STRING},
        "output_is_tuple": {"type": "boolean"},
        "devices": {"type": "array", "items": {"type": "object"}},
        "symbols": {"type": "object", "additionalProperties": {"type": "array", "items": INDEX}},
        "shape_args": {"type": "object", "additionalProperties": {"type": "array", "items": STRING}},
        "shape_values": {"type": "object", "additionalProperties": INDEX},
        "input_types": {"type": "array", "items": _object({
            "shape": {"type": "array", "items": {"oneOf": [INDEX, STRING]}},
            "dtype": STRING}, required=("shape", "dtype"))},
        "externals": {"type": "array", "items": STRING},
    },
    "additionalProperties": False,
}

#: One entry function of an export of several (``tvm_place.compile(..., entries=...)``).
ENTRY_FUNCTION = _object({
    "plan": STAGE_PLAN,
    "calls": POSITIVE,
    "report": STRING,
    # weight name -> [operator charged with it, bytes]
    "weights": {"type": "object", "additionalProperties": {
        "type": "array", "prefixItems": [INDEX, NON_NEGATIVE], "minItems": 2, "maxItems": 2}},
    "problem": {"type": ["object", "null"]},  # checked as a PROBLEM
    "placement": {"type": ["object", "null"]},  # checked as a PLACEMENT
}, required=("plan",))

#: The artifact format ``PlacedModule.export`` writes: 2, a library per device whose functions
#: are its stages (1, before: a library per stage, each called as ``main``; refused on load).
ARTIFACTS_VERSION = 2

MANIFEST = _object({
    "format": {"const": "tvm-place-artifacts"},
    "version": {"const": ARTIFACTS_VERSION},
    "tvm_version": STRING,
    "devices": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["name", "kind", "index"],
        "properties": {"name": STRING, "kind": STRING, "index": INDEX}}},
    # the stage plan; null in an export of several entry functions, whose plans are in functions
    "plan": {"oneOf": [STAGE_PLAN, {"type": "null"}]},
    "functions": {"type": "object", "additionalProperties": ENTRY_FUNCTION},
    # module name (a plan step's `module`) -> library file name, inside the export directory
    "libraries": {"type": "object", "minProperties": 1,
                  # a module name is a plain file name (workers write its library under it)
                  "propertyNames": {"pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"},
                  "additionalProperties": {"type": "string", "minLength": 1}},
    "sha256": {"type": "object", "additionalProperties": SHA256},
    "placement": {"type": ["object", "null"]},  # checked as a PLACEMENT
    "problem": {"type": ["object", "null"]},  # checked as a PROBLEM
    "report": STRING,
    "fallbacks": {"type": "array", "items": STRING},
}, required=("format", "version", "tvm_version", "devices", "plan", "libraries"))

# -- cost caches ------------------------------------------------------------------------------------

#: key -> measured seconds, or (build support) "" / why a target cannot build the kernel
COST_CACHE_ENTRY = {"oneOf": [NON_NEGATIVE, STRING]}
COST_CACHE = {"type": "object", "additionalProperties": COST_CACHE_ENTRY}

# -- learned cost models (tvm_place/cost/learned.py) -----------------------------------------------

#: The type of every item of each array of a learned tree. Checked by :func:`learned_tree_error`,
#: not by the schema: jsonschema took 0.7 s (idle) to 2.3 s (load 5) to check the shipped model's
#: 113,000 items item by item, on every process's first placement; the loop below about 30 ms.
LEARNED_TREE_ITEMS = {"feature": "integer", "threshold": "number", "left": "integer",
                      "right": "integer", "default_left": "boolean", "value": "number"}
LEARNED_TREE = _object({key: {"type": "array"} for key in LEARNED_TREE_ITEMS},
                       required=tuple(LEARNED_TREE_ITEMS))
LEARNED_MODEL = _object({
    "format": {"const": "tvm-place-learned-cost-model"},
    "version": {"const": 1},
    "target": STRING,
    "threads": INDEX,
    "tvm_version": STRING,
    "target_transform": {"const": "log seconds"},
    "features": {"type": "array", "items": STRING},
    "base_score": NUMBER,
    "linear": _object({"features": {"type": "array", "items": STRING},
                       "coefficients": {"type": "array", "items": NUMBER}},
                      required=("features", "coefficients")),
    "trees": {"type": "array", "items": LEARNED_TREE, "minItems": 1},
    "training": {"type": "object"},
}, required=("format", "version", "target", "features", "base_score", "trees"))

#: What each format is, and the fix to offer, by schema.
_FORMATS = {
    id(PROBLEM): ("problem", f"see {FORMAT_DOC}"),
    id(PLACEMENT): ("placement", "write it with `tvm-place solve --output` or Placement.to_json()"),
    id(PLAN): ("plan", "write it with `tvm-place place MODEL --save-plan FILE` (or "
                       "TVM_PLACE_UPDATE_GOLDEN=1 for a golden plan)"),
    id(DNN_WORKLOAD): ("dnn-partitioning workload", "see data/dnn-partitioning/README.md"),
    id(DNN_SPLIT): ("dnn-partitioning split", "see data/dnn-partitioning/README.md"),
    id(PROFILE): ("device profile", f"see 'Device files' in {FORMAT_DOC}"),
    id(LINK): ("link", "a link gives bandwidth_gbs (above 0) and latency_us (at least 0)"),
    id(DEVICE_FILE): ("device file", f"see 'Device files' in {FORMAT_DOC}"),
    id(MANIFEST): ("manifest", "export the model again with this tvm-place (`tvm-place compile` "
                               "or PlacedModule.export)"),
    id(COST_CACHE): ("cost cache", "delete the file; tvm-place measures again"),
    id(LEARNED_MODEL): ("learned cost model", "write it with scripts/train_cost_model.py"),
}


# -- the checker ------------------------------------------------------------------------------------


def _is_finite_number(checker, value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (isinstance(value, int) or math.isfinite(value)))


def _is_integer(checker, value) -> bool:
    # 3.0 is an integer in JSON Schema; but not a boolean, and not a float past 2**53
    return _is_finite_number(checker, value) and float(value).is_integer()


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _is_finite_number, "integer": _is_integer}),
)
_validators: dict[int, Any] = {}


def learned_tree_error(tree: Mapping) -> tuple[str, int, str] | None:
    """``(array, index, expected type)`` of the first item of a learned tree (checked against
    :data:`LEARNED_TREE`) that is not of :data:`LEARNED_TREE_ITEMS`' type, else None."""
    checks = {"integer": lambda x: _is_integer(None, x), "number": lambda x: _is_finite_number(None, x),
              "boolean": lambda x: isinstance(x, bool)}
    for key, kind in LEARNED_TREE_ITEMS.items():
        check = checks[kind]
        for index, item in enumerate(tree[key]):
            if not check(item):
                return key, index, kind
    return None
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel, _short.maxlist, _short.maxdict = 60, 60, 2, 4, 4


def _field(path) -> str:
    """A JSON path as ``nodes[3].flops``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def unknown_name(kind: str, name: str, known) -> str:
    """``unknown {kind} {name!r} (did you mean ...?); known: [...]``."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return (f"unknown {kind} {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; known: {sorted(known)}")


def field_error(source: str, path, problem: str, fix: str, error: type = TvmPlaceError) -> TvmPlaceError:
    """The one shape of a file error: ``{source}: {field}: {problem}; fix: {fix}``."""
    return error(f"{source}: {_field(path)}: {problem}; fix: {fix}")


def _describe(err: jsonschema.ValidationError) -> str:
    """What is wrong, in words, for the errors the schemas above can give."""
    value, schema, kind = err.instance, err.schema, err.validator
    shown = _short.repr(value)
    if kind == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(known)) if isinstance(value, Mapping) else []
        if not known:
            return f"unknown keys {extra}"
        return "; ".join(unknown_name("key", key, known).split("; known")[0] for key in extra) \
            + f"; the keys are {known}"
    if kind == "required":
        missing = [key for key in err.validator_value if key not in value]
        return f"missing {', '.join(repr(k) for k in missing)}"
    if kind == "type":
        wanted = err.validator_value
        wanted = [wanted] if isinstance(wanted, str) else wanted
        names = {"number": "a finite number", "integer": "a whole number", "string": "a string",
                 "object": "an object", "array": "a list", "boolean": "true or false",
                 "null": "null"}
        expected = " or ".join(names.get(w, w) for w in wanted)
        return f"{shown} is {_json_type(value)}, expected {expected}"
    if kind == "const":
        return f"is {shown}, expected {err.validator_value!r}"
    if kind == "enum":
        return f"is {shown}, expected one of {err.validator_value}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = err.validator_value
        words = {"minimum": f"at least {bound}", "exclusiveMinimum": f"above {bound}",
                 "maximum": f"at most {bound}", "exclusiveMaximum": f"below {bound}"}[kind]
        return f"{shown} is out of range: give a number {words}"
    if kind in ("minItems", "maxItems"):
        return f"has {len(value)} entries, expected {'at least' if kind == 'minItems' else 'at most'} " \
               f"{err.validator_value}"
    if kind == "minProperties":
        return "is empty"
    if kind == "minLength":
        return "is an empty string"
    if kind == "pattern":
        return f"{shown} does not match {err.validator_value!r}"
    if kind == "propertyNames":
        return f"key {shown} is not allowed here ({err.message})"
    if kind == "oneOf":
        options = [s.get("type", s.get("const", "...")) for s in err.validator_value]
        return f"{shown} is {_json_type(value)}, expected one of {options}"
    return err.message


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number" if math.isfinite(value) else "not a finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _relevance(err: jsonschema.ValidationError):
    # The version first, then unknown keys (a misspelt key is also a missing one), missing keys,
    # then the deepest error.
    return (list(err.path) != ["version"], err.validator != "additionalProperties",
            err.validator != "required", -len(err.path))


def _validator(schema: dict):
    validator = _validators.get(id(schema))
    if validator is None:
        validator = _validators[id(schema)] = _Validator(schema)
    return validator


def is_valid(data: Any, schema: dict) -> bool:
    """Whether ``data`` follows ``schema`` (for data that is dropped, not refused, when bad)."""
    try:
        return _validator(schema).is_valid(data)
    except RecursionError:
        return False


def validate(data: Any, schema: dict, source: str, error: type = TvmPlaceError,
             prefix: tuple = ()) -> Any:
    """Check ``data`` against ``schema``; the first violation raises ``error`` (a
    :class:`TvmPlaceError` subclass) naming ``source`` (e.g. "problem file 'p.json'"), the field
    (``prefix`` + the path in ``data``), what is wrong and the fix. Returns ``data``."""
    what, fix = _FORMATS.get(id(schema), ("file", f"see {FORMAT_DOC}"))
    tag = schema.get("properties", {}).get("format", {}).get("const")
    if tag is not None and (not isinstance(data, Mapping) or data.get("format") != tag):
        # the wrong file altogether: say so before any detail
        raise field_error(source, ("format",), f"not a tvm-place {what}: the top level must be an "
                          f"object with \"format\": \"{tag}\"", fix, error)
    try:
        errors = sorted(_validator(schema).iter_errors(data), key=_relevance)
        if not errors:
            return data
        err = errors[0]
        if err.validator == "oneOf" and err.context:  # the branch of the value's type says most
            fitting = [e for e in err.context if "type" in err.validator_value[e.relative_schema_path[0]]
                       and _validator({"type": err.validator_value[e.relative_schema_path[0]]["type"]})
                       .is_valid(err.instance)]
            if fitting:
                err = sorted(fitting, key=_relevance)[0]
        path = (*prefix, *err.absolute_path)
        if path and path[-1] == "version" and err.validator == "const":
            problem = (f"version {_short.repr(err.instance)} is not supported (this tvm-place reads "
                       f"{what} files of version {err.validator_value})")
        else:
            problem = _describe(err)
    except RecursionError:
        path, problem = prefix, "nested too deeply to be a tvm-place file"
    raise field_error(source, path, problem, fix, error)


# -- reading files ----------------------------------------------------------------------------------


def read_file(path: str | Path, what: str, error: type = TvmPlaceError) -> Any:
    """The data in a JSON file (TOML by the ``.toml`` suffix), or ``error`` saying why it cannot
    be read: missing, a directory, unreadable, not text, not JSON/TOML, nested too deeply."""
    path = Path(path)
    source = f"{what} file {str(path)!r}"
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{source} does not exist") from None
    except IsADirectoryError:
        raise error(f"{source} is a directory; give the file") from None
    except PermissionError:
        raise error(f"{source} cannot be read (permission denied); check its permissions") from None
    except UnicodeDecodeError:
        raise error(f"{source} is not a text file (it holds binary data); give a JSON file") from None
    except OSError as err:
        raise error(f"{source} cannot be read ({err.strerror or err})") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise error(f"{source} is not valid TOML ({err})") from None
        except RecursionError:
            raise error(f"{source} is nested too deeply to be a tvm-place file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{source} is not valid JSON (line {err.lineno}, column {err.colno}: "
                    f"{err.msg})") from None
    except RecursionError:
        raise error(f"{source} is nested too deeply to be a tvm-place file") from None


def load(path: str | Path, what: str, schema: dict, error: type = TvmPlaceError) -> Any:
    """:func:`read_file` then :func:`validate`: a file's data, checked against its format."""
    return validate(read_file(path, what, error), schema, f"{what} file {str(Path(path))!r}", error)
