"""Local servers for tests: vendor fakes speaking the vendors' wire formats, and the real MongoDB-wire server."""
