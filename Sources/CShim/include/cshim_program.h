#ifndef CSHIM_PROGRAM_H
#define CSHIM_PROGRAM_H

/*
 * Starting the auth helper's policy program (--auth-program) under a user of its own. Plain C
 * types only, so the header imports cleanly into Swift.
 */

/* The steps of cshim_spawn_program_as, reported when one fails. */
enum {
    CSHIM_PROGRAM_STEP_PIPE = 1,      /* pipe2 for the report (in the caller) */
    CSHIM_PROGRAM_STEP_FORK = 2,      /* fork (in the caller) */
    CSHIM_PROGRAM_STEP_SIGNALS = 3,   /* signal handlers to default, empty mask */
    CSHIM_PROGRAM_STEP_SETGROUPS = 4, /* setgroups(0) */
    CSHIM_PROGRAM_STEP_SETRESGID = 5, /* setresgid(gid, gid, gid) */
    CSHIM_PROGRAM_STEP_SETRESUID = 6, /* setresuid(uid, uid, uid) (after saved uid 0, see below) */
    CSHIM_PROGRAM_STEP_REGAIN = 7,    /* root or a capability could be regained after the change */
    CSHIM_PROGRAM_STEP_NO_NEW_PRIVS = 8,
    CSHIM_PROGRAM_STEP_PDEATHSIG = 9, /* prctl(PR_SET_PDEATHSIG, SIGKILL) */
    CSHIM_PROGRAM_STEP_PARENT = 10,   /* the parent died before PDEATHSIG was in place */
    CSHIM_PROGRAM_STEP_DUP2 = 11,     /* the socket to 0 and 1, the stderr pipe to 2 */
    CSHIM_PROGRAM_STEP_CLOSE = 12,    /* every descriptor above 2 close-on-exec */
    CSHIM_PROGRAM_STEP_EXEC = 13,     /* execve */
    CSHIM_PROGRAM_STEP_FILTER = 14,   /* the seccomp filter that keeps it in its process group */
};

/* fork + (optionally) a change of user + execve of `path` with `argv` and `envp` (both
 * NULL-terminated), `sock` as descriptors 0 and 1 and `err` as 2 (both must be 3 or more) and
 * no other descriptor. With change_user, the child calls setgroups(0), setresgid(gid),
 * setresuid(uid) (first making its saved uid 0 when it is not root but holds CAP_SETUID, so
 * that the change clears every capability, ambient ones too), and checks that neither root nor
 * any capability can be regained; uid and gid must not be 0. Every child: signal handlers at
 * their defaults and an empty signal mask, no_new_privs, a seccomp filter under which setsid and
 * setpgid fail with EPERM (so it and all it starts stay in the caller's process group, the
 * supervisor's handle on them), PR_SET_PDEATHSIG(SIGKILL) set after the change of user (a
 * change of credentials clears it; the kernel delivers it only within one user) followed by a
 * check that the parent is still the same, the minimal environment given. The child makes
 * only async-signal-safe calls (raw system calls for the identity change), so the caller need
 * not be single-threaded, though the auth helper is (it has started no thread when it calls
 * this).
 * Returns the child's pid once execve succeeded, or -1 with *failed_step (CSHIM_PROGRAM_STEP_*)
 * and *failed_errno set; the child has been reaped then. */
int cshim_spawn_program_as(const char *path, char *const argv[], char *const envp[], int sock, int err,
                           int change_user, unsigned int uid, unsigned int gid,
                           int *failed_step, int *failed_errno);

#endif
