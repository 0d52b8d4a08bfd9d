"""Test seams the project ships: a fake OpenAI-compatible server for tests and benchmarks."""
