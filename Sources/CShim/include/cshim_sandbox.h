#ifndef CSHIM_SANDBOX_H
#define CSHIM_SANDBOX_H

/*
 * What the Sandbox target needs below Swift's Glibc module: capget/capset (no libcap),
 * setgroups, a non-variadic syscall(2), and the async-signal-safe SIGSYS reporter of the
 * --sandbox-debug mode.
 */

/* The calling thread's effective capability set (64 bits) in *out. 0, or -1 with errno. */
int cshim_effective_capabilities(unsigned long long *out);

/* Empties the calling thread's effective, permitted and inheritable sets (and so its ambient
 * set). 0, or -1 with errno. */
int cshim_clear_capabilities(void);

/* For a process that cannot drop privileges (no CAP_SETUID + CAP_SYS_CHROOT) and so keeps
 * its uid: clears the ambient set, empties the bounding set when CAP_SETPCAP is held, then
 * the effective, permitted and inheritable sets. All of these are
 * per thread: call it before the process starts its first thread, so every thread inherits the
 * empty sets. 0, or -1 with errno. */
int cshim_drop_all_capabilities(void);

/* setgroups(0, NULL): no supplementary groups. 0, or -1 with errno. */
int cshim_setgroups_none(void);

/* When no uid of the process is 0 (an unprivileged process holding CAP_SETUID, e.g. from
 * AmbientCapabilities=), sets the saved uid to 0 with glibc's setresuid(-1, -1, 0), which applies
 * to every thread; real and effective uid stay as they are. The next setresuid to a non-root
 * uid is then a change away from root, on which the kernel clears the permitted, effective and
 * ambient capabilities of every thread, where capset(2) reaches only the calling thread.
 * 0 (also when a uid is already 0), or -1 with errno. */
int cshim_prepare_capability_drop(void);

/* syscall(number, a0..a5) without varargs. Returns the raw result; -1 with errno on failure. */
long cshim_syscall6(long number, long a0, long a1, long a2, long a3, long a4, long a5);

/* getpid through a foreign system call ABI of this machine (tests of the seccomp filter's
 * bad-architecture action): abi 0 is i386 (`int 0x80`), 1 is x32 (syscall | 0x40000000). x86_64
 * only; elsewhere -2 (nothing tried). The pid, or -1 with errno. */
long cshim_foreign_abi_getpid(int abi);

/* Installs the SIGSYS handler of the debug mode (seccomp SCMP_ACT_TRAP). On a trapped call it
 * writes "peerjs: sandbox: forbidden system call NR (NAME)\n" to fd 2 with write(2) only, then
 * makes the process die of SIGSYS (as KILL_PROCESS would). `names[nr]` may be NULL; the table
 * must stay valid for ever (it is read from the signal handler). 0, or -1 with errno. */
int cshim_install_sigsys_reporter(const char *const *names, int count);

#endif
