#ifndef CSHIM_SECRETS_H
#define CSHIM_SECRETS_H

#include <stddef.h>

/* Memory for a private key (SecretBytes): an anonymous private mapping of `size` bytes (a
 * multiple of the page size), MADV_DONTDUMP (never in a core dump) and MADV_WIPEONFORK (never
 * in a forked child), then mlock'd (never swapped); *locked says whether mlock succeeded.
 * NULL with errno when mmap fails. The madvise calls are best effort (old kernels). */
void *cshim_secret_map(size_t size, int *locked);

/* explicit_bzero (which the optimiser cannot drop), munlock and munmap of a cshim_secret_map
 * mapping. */
void cshim_secret_unmap(void *address, size_t size);

/* For a process that holds a decrypted private key: prctl(PR_SET_DUMPABLE, 0) (no core dump,
 * no ptrace or /proc/PID/mem by its own user, /proc/PID files owned by root) and RLIMIT_CORE
 * 0/0 (inherited by children started afterwards). 0, or -1 with errno. */
int cshim_protect_secrets(void);

#endif
