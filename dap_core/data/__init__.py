"""Data: procedural synthetic panoramas (`synthetic`), real dataset readers (`datasets`) and
consistent augmentations (`transforms`).

Submodules are imported explicitly (`from dap_core.data.synthetic import ...`) so that
importing one never pulls in the others' dependencies.
"""
