#define _GNU_SOURCE
#include "cshim_program.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct report {
    int step;
    int error;
};

/* In the child: tell the parent which step failed, and end. */
static void child_fail(int report_fd, int step) {
    struct report r = { step, errno };
    ssize_t ignored = write(report_fd, &r, sizeof(r));
    (void)ignored;
    _exit(127);
}

/* Whether the calling thread holds any permitted, effective or inheritable capability. */
static int child_holds_capabilities(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &header, data) != 0) return 1;
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        if (data[i].permitted || data[i].effective || data[i].inheritable) return 1;
    }
    return 0;
}

/* In the child: become uid/gid for good (raw system calls: async-signal-safe, and they change
 * the one thread a forked child has). Returns 0, or the failed step with errno set. */
static int child_become(unsigned int uid, unsigned int gid) {
    if (uid == 0 || gid == 0) {
        errno = EINVAL;
        return CSHIM_PROGRAM_STEP_SETRESUID;
    }
    /* Not root but holding CAP_SETUID (the packaged supervisor's AmbientCapabilities=): make the
     * saved uid 0 first, so that the final setresuid (from a set with a 0 to none) clears the
     * permitted, effective and ambient capabilities as it does for root. */
    uid_t r, e, s;
    if (syscall(SYS_getresuid, &r, &e, &s) != 0) return CSHIM_PROGRAM_STEP_SETRESUID;
    if (r != 0 && e != 0 && s != 0 && syscall(SYS_setresuid, (uid_t)-1, (uid_t)-1, (uid_t)0) != 0) {
        return CSHIM_PROGRAM_STEP_SETRESUID;
    }
    if (syscall(SYS_setgroups, 0, NULL) != 0) return CSHIM_PROGRAM_STEP_SETGROUPS;
    if (syscall(SYS_setresgid, (gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) return CSHIM_PROGRAM_STEP_SETRESGID;
    if (syscall(SYS_setresuid, (uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) return CSHIM_PROGRAM_STEP_SETRESUID;
    /* Ambient capabilities are cleared by that change; clearing them again costs nothing. */
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    gid_t rg, eg, sg;
    if (syscall(SYS_getresuid, &r, &e, &s) != 0 || syscall(SYS_getresgid, &rg, &eg, &sg) != 0) {
        return CSHIM_PROGRAM_STEP_REGAIN;
    }
    if (r != uid || e != uid || s != uid || rg != gid || eg != gid || sg != gid) {
        errno = EPERM;
        return CSHIM_PROGRAM_STEP_REGAIN;
    }
    if (syscall(SYS_setresuid, (uid_t)0, (uid_t)0, (uid_t)0) == 0 || syscall(SYS_setresgid, (gid_t)0, (gid_t)0, (gid_t)0) == 0
        || child_holds_capabilities()) {
        errno = EPERM;
        return CSHIM_PROGRAM_STEP_REGAIN;
    }
    return 0;
}

#if defined(__x86_64__)
#define PROGRAM_NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define PROGRAM_NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "the policy program's filter needs this machine's AUDIT_ARCH"
#endif

#define PROGRAM_DENY (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

/* The policy program's one filter: setsid and setpgid fail with EPERM (in every ABI of the
 * machine), everything else is allowed. So the program, and all it starts (a filter is
 * inherited), stays in the helper's process group, which the supervisor kills (root or
 * CAP_KILL) when the helper ends or restarts: PR_SET_PDEATHSIG alone would not reach a program
 * of another user (the kernel checks the dying parent's right to signal it). Built as data, so
 * the child only makes a system call to load it. */
static struct sock_filter program_filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROGRAM_NATIVE_ARCH, 0, 4),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
    /* x32 shares the native arch value; its numbers carry __X32_SYSCALL_BIT: clear it. */
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, ~0x40000000U),
#else
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, ~0U),
#endif
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setsid, 6, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setpgid, 5, 4),
    /* Another ABI (i386 on x86_64: setsid 66, setpgid 57; arm32 on aarch64 the same numbers);
     * an arch the machine does not have is allowed (no system call comes from it). */
#if defined(__x86_64__)
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_I386, 0, 3),
#else
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_ARM, 0, 3),
#endif
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 66, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 57, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_RET | BPF_K, PROGRAM_DENY),
};

int cshim_spawn_program_as(const char *path, char *const argv[], char *const envp[], int sock, int err,
                           int change_user, unsigned int uid, unsigned int gid,
                           int *failed_step, int *failed_errno) {
    *failed_step = 0;
    *failed_errno = 0;
    if (sock < 3 || err < 3) {
        *failed_step = CSHIM_PROGRAM_STEP_DUP2;
        *failed_errno = EINVAL;
        return -1;
    }
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        *failed_step = CSHIM_PROGRAM_STEP_PIPE;
        *failed_errno = errno;
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        *failed_step = CSHIM_PROGRAM_STEP_FORK;
        *failed_errno = errno;
        close(report[0]);
        close(report[1]);
        return -1;
    }
    if (pid == 0) {
        /* The child: async-signal-safe calls only from here on. */
        int fd = report[1];
        /* Handlers first (a handler of the helper must never run here), then the mask. */
        struct sigaction action;
        memset(&action, 0, sizeof(action));
        action.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig == SIGKILL || sig == SIGSTOP) continue;
            (void)sigaction(sig, &action, NULL); /* fails only for numbers glibc reserves */
        }
        sigset_t empty;
        sigemptyset(&empty);
        if (sigprocmask(SIG_SETMASK, &empty, NULL) != 0) child_fail(fd, CSHIM_PROGRAM_STEP_SIGNALS);
        if (change_user) {
            int step = child_become(uid, gid);
            if (step != 0) child_fail(fd, step);
        }
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(fd, CSHIM_PROGRAM_STEP_NO_NEW_PRIVS);
        struct sock_fprog program = { (unsigned short)(sizeof(program_filter) / sizeof(program_filter[0])), program_filter };
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0) child_fail(fd, CSHIM_PROGRAM_STEP_FILTER);
        /* After the change of user, which clears it. The kernel delivers it only when the dying
         * parent may signal the child (same user), i.e. when no user was changed here; a program
         * under a user of its own is reached through its process group (program_filter). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) child_fail(fd, CSHIM_PROGRAM_STEP_PDEATHSIG);
        if (getppid() != parent) {
            errno = ESRCH;
            child_fail(fd, CSHIM_PROGRAM_STEP_PARENT);
        }
        /* dup2 clears close-on-exec on 0–2; sock and err are 3 or more, so none is overwritten
         * before it is copied. */
        if (dup2(sock, 0) < 0 || dup2(sock, 1) < 0 || dup2(err, 2) < 0) child_fail(fd, CSHIM_PROGRAM_STEP_DUP2);
        /* Every descriptor above 2 close-on-exec (the report pipe must stay open until execve). */
        if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
            struct rlimit limit;
            long top = 65536;
            if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_max != RLIM_INFINITY && (long)limit.rlim_max < top) {
                top = (long)limit.rlim_max;
            }
            for (long d = 3; d < top; d++) {
                if (d != fd) (void)fcntl((int)d, F_SETFD, FD_CLOEXEC);
            }
        }
        execve(path, argv, envp);
        child_fail(fd, CSHIM_PROGRAM_STEP_EXEC);
    }
    close(report[1]);
    struct report r = { 0, 0 };
    ssize_t n;
    do {
        n = read(report[0], &r, sizeof(r));
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == 0) return pid; /* the write end closed at execve */
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    *failed_step = n == (ssize_t)sizeof(r) ? r.step : CSHIM_PROGRAM_STEP_EXEC;
    *failed_errno = n == (ssize_t)sizeof(r) ? r.error : (n < 0 ? errno : EIO);
    return -1;
}
