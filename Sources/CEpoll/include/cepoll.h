#ifndef CEPOLL_H
#define CEPOLL_H

/*
 * epoll(7) for peerjs-bench's client loop, which Swift's Glibc module does not
 * reach. Plain C types only (including <sys/epoll.h> here would make this
 * module re-export <sys/types.h> and clash with Glibc's). Each registration's
 * data is its descriptor.
 */

enum {
    CEPOLL_IN = 0x001,
    CEPOLL_OUT = 0x004,
    CEPOLL_ERR = 0x008,
    CEPOLL_HUP = 0x010,
    CEPOLL_RDHUP = 0x2000,
};

/* epoll_create1(EPOLL_CLOEXEC). */
int cepoll_create(void);

/* epoll_ctl(epfd, EPOLL_CTL_ADD or EPOLL_CTL_MOD, fd, {events, .data.fd = fd}).
 * Returns 0 or -1 with errno set. */
int cepoll_add(int epfd, int fd, unsigned int events);
int cepoll_modify(int epfd, int fd, unsigned int events);

/* epoll_pwait2 for at most max (≤ 1024) events, waiting at most timeout_ns
 * nanoseconds (< 0: no limit): fds[i] and events[i] for each. Nanoseconds
 * because the bench's 1 ms pacing timer would otherwise be rounded up to
 * whole milliseconds by epoll_wait. Returns the count, or -1 with errno set. */
int cepoll_wait(int epfd, int *fds, unsigned int *events, int max, long long timeout_ns);

#endif
