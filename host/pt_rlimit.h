/* pt_rlimit: the process's resource limits at start-up. */
#ifndef PT_RLIMIT_H
#define PT_RLIMIT_H

/* Raises the soft limit of open files (RLIMIT_NOFILE) to the hard one, so
 * server.max_connections is not cut short by a low default soft limit (1024
 * on many systems) while the hard one allows more, and logs what it did.
 * Returns the soft limit now in force, or -1 when it cannot be read. */
long pt_rlimit_raise_nofile(void);

#endif
