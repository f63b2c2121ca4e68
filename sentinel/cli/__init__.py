"""The command line: argument parsing, daemon commands, the API client, result reports."""
