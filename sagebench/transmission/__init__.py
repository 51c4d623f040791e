"""Stage 5 of the data path: what crosses the uplink, what it costs, how long it takes.

``patches`` (the chosen pixels + positions), ``codecs`` (real payload bytes), ``byte_budget``
(fill a request up to N bytes), ``channels`` (uplink latency).
"""

from sagebench.transmission.patches import Transmission, patchify, transmit

__all__ = ["Transmission", "patchify", "transmit"]
