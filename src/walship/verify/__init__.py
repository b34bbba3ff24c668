"""`walship verify`: read the repository back and prove that what it holds can be restored."""
