"""The run of an audit: its plan, the one chunk pipeline, explainer lifecycles, progress.

:mod:`.lifecycle` calls an explainer's phases (start, update, merge, prepare, finish) timed
and guarded; :mod:`.progress` reports how far a run is and lets a caller cancel it.
"""
