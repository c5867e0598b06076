"""The alert evaluator: a process of its own that evaluates rules and delivers webhooks.

`evaluate` is the state machine, `owners` decides which rules this replica evaluates,
`webhook` delivers, `backend` reaches the store, `evaluator` runs them together.
"""
