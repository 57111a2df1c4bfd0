"""Local servers for tests: fakes speaking the paid vendors' wire formats."""
