"""The dependency direction and the purity of the core, checked by parsing the source."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "algorithms").glob("*.py"))

# The core may use the standard library's pure parts, numpy and scipy, and itself.
FORBIDDEN_MODULES = {
    "broker", "worker", "rung", "zmq", "msgpack", "socket", "asyncio", "threading", "multiprocessing",
    "subprocess", "random", "time", "datetime", "uuid", "os", "io", "pathlib", "pickle", "signal",
}


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_imports_nothing_of_the_runtime_and_no_clock_socket_file_or_global_rng(path):
    for line, module in imported_modules(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN_MODULES, f"{path.name}:{line} imports {module}"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_draws_only_from_derived_generators(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        # np.random.<function>(...) other than the generator machinery would use numpy's global state.
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "random" and getattr(node.value.value, "id", None) in ("np", "numpy"):
                assert node.attr in ("SeedSequence", "PCG64", "Generator"), (
                    f"{path.name}:{node.lineno} uses np.random.{node.attr}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
            pytest.fail(f"{path.name}:{node.lineno} opens a file")


def top_level_imports(folder):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            yield path, line, module


@pytest.mark.parametrize("folder, forbidden", [
    ("broker", ("rung.worker", "worker", "rung.cli", "rung.tuning", "rung.local")),
    ("worker", ("rung.broker", "broker", "rung.cli", "rung.tuning", "rung.local", "rung.algorithms")),
    ("rung/protocol", ("rung.broker", "rung.worker", "rung.algorithms", "zmq")),
], ids=["broker", "worker", "protocol"])
def test_the_runtime_imports_point_one_way(folder, forbidden):
    for path, line, module in top_level_imports(folder):
        assert not module.startswith(forbidden), f"{path.relative_to(ROOT)}:{line} imports {module}"


@pytest.mark.parametrize("imports", [
    "from rung import choice, loguniform, randint, uniform; import rung.worker.child",
    "import rung.cli, rung.worker.agent, rung.broker.broker; rung.Study('m:f', {'x': rung.uniform(0, 1)}).build()",
], ids=["a-trainables-module", "every-rung-process"])
def test_no_process_pays_for_scipy_unless_its_study_uses_fire_pbt(imports):
    # Every attempt imports its trainable's module in a fresh process, and every worker and broker
    # starts one: scipy (FIRE PBT's curve fits) would add about 0.75 s to each.
    import subprocess
    import sys

    code = (f"import sys, rung; {imports}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
