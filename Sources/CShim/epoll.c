#include "cshim_epoll.h"

#include <sys/epoll.h>

int cshim_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

static int control(int epfd, int op, int fd, unsigned int events) {
    struct epoll_event event = { .events = events, .data.fd = fd };
    return epoll_ctl(epfd, op, fd, &event);
}

int cshim_epoll_add(int epfd, int fd, unsigned int events) {
    return control(epfd, EPOLL_CTL_ADD, fd, events);
}

int cshim_epoll_modify(int epfd, int fd, unsigned int events) {
    return control(epfd, EPOLL_CTL_MOD, fd, events);
}

int cshim_epoll_wait(int epfd, int *fds, unsigned int *events, int max, int timeout_ms) {
    struct epoll_event ready[1024];
    if (max > 1024) max = 1024;
    int count = epoll_wait(epfd, ready, max, timeout_ms);
    for (int i = 0; i < count; i++) {
        fds[i] = ready[i].data.fd;
        events[i] = ready[i].events;
    }
    return count;
}
