"""Model families behind one adapter interface (`base.ModelAdapter`); see `registry`."""
