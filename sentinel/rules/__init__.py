"""Rule files to the typed model: the versioned spec, validation with located problems, the
frozen model, window catalogues, Sloth input.
"""
