"""sagebench's configuration files (shipped inside the package as ``sagebench.conf``)."""
