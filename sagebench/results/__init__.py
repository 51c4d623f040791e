"""Stage 9: the results of a run, typed (``model``), on disk (``files``), as a table (``table``).

``results.json`` (schema ``results.schema.json``) + ``samples.parquet`` per run; the benchmark
fingerprint (``files.fingerprint``) hashes what makes two runs comparable.
"""

from sagebench.results.files import (
                                     RESULTS_FILE,
                                     SAMPLES_FILE,
                                     SCHEMA_VERSION,
                                     file_sha256,
                                     fingerprint,
                                     provenance,
                                     read_results,
                                     write_results,
                                     write_samples,
)
from sagebench.results.model import RunResults
from sagebench.results.table import format_table

__all__ = ["RESULTS_FILE", "RunResults", "SAMPLES_FILE", "SCHEMA_VERSION", "file_sha256", "fingerprint", "format_table",
           "provenance", "read_results", "write_results", "write_samples"]
