"""Python imports this at start-up in the subprocesses of tests not marked `model` (conftest puts this
directory first on PYTHONPATH). Every embedded-model load imports llama.cpp's bindings; here that import
ends the process with a distinctive code instead, so an unmarked slow test cannot hide in the fast suite."""

import os
import sys

EXIT_CODE = 97
MESSAGE = "a test not marked `model` loads an embedded model (llama_cpp imported): mark it @pytest.mark.model"


class _RefuseLlamaCpp:
    def find_spec(self, name, path=None, target=None):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            sys.stderr.write(MESSAGE + "\n")
            sys.stderr.flush()
            os._exit(EXIT_CODE)  # not an ImportError: nothing in the product may catch it
        return None


sys.meta_path.insert(0, _RefuseLlamaCpp())
