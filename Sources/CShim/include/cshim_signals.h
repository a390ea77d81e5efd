#ifndef CSHIM_SIGNALS_H
#define CSHIM_SIGNALS_H

/* Blocks the given signals in the calling thread (and so in every thread it starts later)
 * and returns a signalfd for them, close-on-exec and non-blocking; -1 with errno on failure.
 * Swift's Glibc module does not export <sys/signalfd.h>. */
int cshim_signalfd(const int *signals, int count);

/* Reads one pending signal from a signalfd: its number, 0 when none is pending, -1 on error. */
int cshim_signalfd_next(int fd);

#endif
