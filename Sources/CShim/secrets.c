#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include "cshim_secrets.h"

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

void *cshim_secret_map(size_t size, int *locked) {
    void *address = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address == MAP_FAILED) {
        *locked = 0;
        return NULL;
    }
    int saved = errno;
    (void)madvise(address, size, MADV_DONTDUMP);
    (void)madvise(address, size, MADV_WIPEONFORK);
    *locked = mlock(address, size) == 0;
    errno = saved;
    return address;
}

void cshim_secret_unmap(void *address, size_t size) {
    if (address == NULL) return;
    explicit_bzero(address, size);
    (void)munlock(address, size);
    (void)munmap(address, size);
}

int cshim_protect_secrets(void) {
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) return -1;
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
