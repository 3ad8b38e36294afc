"""Online work: the event stream that feeds the online store a served model reads."""
