"""Transactions: synthetic generator, Spark training-set job, data checks."""
