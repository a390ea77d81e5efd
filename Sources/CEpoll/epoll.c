#include "cepoll.h"

#include <errno.h>
#include <sys/epoll.h>
#include <time.h>

int cepoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

static int control(int epfd, int op, int fd, unsigned int events) {
    struct epoll_event event = { .events = events, .data.fd = fd };
    return epoll_ctl(epfd, op, fd, &event);
}

int cepoll_add(int epfd, int fd, unsigned int events) {
    return control(epfd, EPOLL_CTL_ADD, fd, events);
}

int cepoll_modify(int epfd, int fd, unsigned int events) {
    return control(epfd, EPOLL_CTL_MOD, fd, events);
}

int cepoll_wait(int epfd, int *fds, unsigned int *events, int max, long long timeout_ns) {
    struct epoll_event ready[1024];
    if (max > 1024) max = 1024;
    struct timespec timeout = { .tv_sec = timeout_ns / 1000000000LL, .tv_nsec = timeout_ns % 1000000000LL };
    int count = epoll_pwait2(epfd, ready, max, timeout_ns < 0 ? NULL : &timeout, NULL);
    if (count < 0 && errno == ENOSYS) {
        /* Before Linux 5.11: millisecond timeouts, rounded up. */
        int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
        count = epoll_wait(epfd, ready, max, ms);
    }
    for (int i = 0; i < count; i++) {
        fds[i] = ready[i].data.fd;
        events[i] = ready[i].events;
    }
    return count;
}
