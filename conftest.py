"""pytest --doctest-modules imports every module under mvstore/: leave out the framework integrations whose
package is missing (tests/test_integrations.py skips their tests with the install command)."""

import importlib.util

collect_ignore = [
    f"mvstore/integrations/{name}.py"
    for name, package in (("langchain", "langchain_core"), ("llamaindex", "llama_index"))
    if importlib.util.find_spec(package) is None
]
