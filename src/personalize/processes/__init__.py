"""Process supervisors: the embedded Redis and PostgreSQL servers the lab starts and stops itself."""
