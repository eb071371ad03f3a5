"""Training, evaluation and the command line of qlr (needs the ``train`` extra)."""
