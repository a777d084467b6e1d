"""Running plans: chunks, backends, merging, checkpoints, output folders, studies."""


class RunNote(UserWarning):
    """Something a run did that its user should know: designs skipped, a damaged checkpoint
    chunk set aside and recomputed, a stale folder lock taken over.  The library reports
    these as warnings; the command line prints them as ``note: ...`` lines."""
