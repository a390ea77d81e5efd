#define _GNU_SOURCE
#include "cshim.h"

#include <errno.h>
#include <spawn.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define CSHIM_MAX_RECV_FDS 4

int cshim_spawn_addclosefrom(void *file_actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)file_actions, from);
}

int cshim_spawn_setsid_flag(void) {
    return POSIX_SPAWN_SETSID;
}

int cshim_accept4(int fd, void *addr, unsigned int *addrlen) {
    return accept4(fd, (struct sockaddr *)addr, (socklen_t *)addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

long cshim_send_frame(int sock, const void *buf, size_t len, int fd, int flags) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    return (long)sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
}

long cshim_recv_frame(int sock, void *buf, size_t cap, int *fd_out, int *truncated_out, int flags) {
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    union {
        char buf[CMSG_SPACE(CSHIM_MAX_RECV_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);

    *fd_out = -1;
    *truncated_out = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
    if (n < 0) {
        return -1;
    }

    int fds[CSHIM_MAX_RECV_FDS * 2];
    int count = 0;
    int overflow = 0;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t bytes = cmsg->cmsg_len - CMSG_LEN(0);
        size_t k = bytes / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int rfd;
            memcpy(&rfd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
            if (count < (int)(sizeof(fds) / sizeof(fds[0]))) {
                fds[count++] = rfd;
            } else {
                /* cannot happen with a buffer sized for 4 fds; close anyway */
                close(rfd);
                overflow = 1;
            }
        }
    }

    if (count == 0 && !overflow && (msg.msg_flags & MSG_CTRUNC) && !(msg.msg_flags & MSG_TRUNC)) {
        /* The record is whole; its descriptor could not be installed (EMFILE). */
        *truncated_out = 2;
        return (long)n;
    }
    if (count > 1 || overflow || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        int saved = errno;
        for (int i = 0; i < count; i++) {
            close(fds[i]);
        }
        errno = saved;
        *truncated_out = 1;
        return (long)n;
    }
    if (count == 1) {
        *fd_out = fds[0];
    }
    return (long)n;
}

int cshim_setresuid(unsigned int id) {
    return setresuid((uid_t)id, (uid_t)id, (uid_t)id);
}

int cshim_setresgid(unsigned int id) {
    return setresgid((gid_t)id, (gid_t)id, (gid_t)id);
}

int cshim_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

int cshim_not_dumpable(void) {
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
