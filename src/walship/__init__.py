"""walship: PostgreSQL continuous archiving and point-in-time recovery to S3."""

__version__ = "0.1.0"
