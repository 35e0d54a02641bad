"""What the tests share besides fixtures (those are in tests/conftest.py): paths and example files, the real engines
and how to reach them, servers on loopback, and helpers that read what Stellwerk wrote."""
