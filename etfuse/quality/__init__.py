"""Great Expectations validation of every incoming batch (docs/validation.md; step 2 of a day in docs/architecture.md).

``validate(source, ds, settings=..., file=..., context=...)`` runs the source's suites on what a
reader returned and says whether the file is accepted (no failed critical check), which warnings
failed, and where its HTML report is.  See docs/validation.md for every check.

Importing this package is cheap; Great Expectations itself is imported on the first validation.
"""

from etfuse.quality.validate import CheckOutcome, ValidationContext, ValidationResult, validate

__all__ = ["CheckOutcome", "ValidationContext", "ValidationResult", "validate"]
