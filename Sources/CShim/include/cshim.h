#ifndef CSHIM_H
#define CSHIM_H

/*
 * Small C wrappers for what Swift's Glibc module cannot reach: calls that
 * need _GNU_SOURCE (accept4, posix_spawn_file_actions_addclosefrom_np,
 * setresuid/setresgid), variadic functions (prctl) and the CMSG_* macros.
 * The header uses only plain C types so it imports cleanly into Swift.
 */

#include <stddef.h>

/* posix_spawn_file_actions_addclosefrom_np(file_actions, from).
 * file_actions points at a posix_spawn_file_actions_t. Returns 0 or an errno value. */
int cshim_spawn_addclosefrom(void *file_actions, int from);

/* POSIX_SPAWN_SETSID (a GNU extension Swift's Glibc module does not show): the child calls
 * setsid(2), so it leads a new session and process group with no controlling terminal. */
int cshim_spawn_setsid_flag(void);

/* accept4(fd, addr, addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK).
 * addr points at a struct sockaddr_storage (or is NULL with addrlen NULL). */
int cshim_accept4(int fd, void *addr, unsigned int *addrlen);

/* One sendmsg(2) of len bytes with MSG_NOSIGNAL | flags. When fd >= 0, exactly
 * that one descriptor travels with the record as SCM_RIGHTS.
 * Returns sendmsg's result (-1 with errno set on failure). */
long cshim_send_frame(int sock, const void *buf, size_t len, int fd, int flags);

/* One recvmsg(2) with MSG_CMSG_CLOEXEC | flags into buf (cap bytes), with a
 * control buffer big enough for 4 descriptors. *fd_out is the one descriptor
 * received, or -1. If more than one descriptor arrived, or MSG_TRUNC or
 * MSG_CTRUNC is set, every received descriptor is closed, *fd_out is -1 and
 * *truncated_out is 1 (a protocol violation); otherwise *truncated_out is 0.
 * Exception: MSG_CTRUNC alone, with the record whole and no descriptor received, is what the
 * kernel reports when the receiver's descriptor table was full (the descriptor is lost, the
 * record is fine): *truncated_out is 2 then.
 * Returns recvmsg's result (-1 with errno set on failure). */
long cshim_recv_frame(int sock, void *buf, size_t cap, int *fd_out, int *truncated_out, int flags);

/* setresuid(id, id, id) / setresgid(id, id, id). Return 0 or -1 with errno. */
int cshim_setresuid(unsigned int id);
int cshim_setresgid(unsigned int id);

/* prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0). Returns 0 or -1 with errno. */
int cshim_no_new_privs(void);

/* prctl(PR_SET_DUMPABLE, 0): no ptrace, /proc/PID/{mem,environ,fd} or pidfd_getfd by processes of
 * the same user, no core dump. Returns 0 or -1 with errno. */
int cshim_not_dumpable(void);

#endif
