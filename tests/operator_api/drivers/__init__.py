"""One module per server that speaks the operator API (docs/OPERATOR_API.md). Each is loaded as
a pytest plugin by tests/operator_api/conftest.py and defines a fixture ``<name>_target`` that
yields a ``tests.operator_api.target.Target`` (see that module for the interface), or skips."""
