"""Retention of local copies: classes by rule, what to purge, holds, the purger."""
