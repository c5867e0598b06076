"""The HTTP face of each hosted API: where its key travels, what it answers, how it errs.

Parsing lives in `formats/`; a dialect here only knows its wire manners.
"""
