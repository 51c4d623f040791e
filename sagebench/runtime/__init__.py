"""Process plumbing that no stage owns: CPU threads and timers (``speed``), glibc's allocator
(``host_memory``), atomic files and locks (``files``)."""
